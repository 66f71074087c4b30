r"""``ota-train``: train and evaluate the FCOS detector from an ``ml_collections`` config.

Examples::

    ota-train                                   # configs/shapes.py into runs/shapes
    ota-train --config smoke --workdir /tmp/smoke
    ota-train --config train/configs/shapes.py --config.train.steps=100 \
        --config.loss.assigner=simota --config.model.overrides.fpn_width=64
    ota-train --config coco_fcos_r50_ota_1x --config.dataset.data_dir=/data/tfds \
        --distributed                          # on every host of a multi-host job

``--config`` takes a config name of ``ota_train/configs`` or a path to a file
with a ``get_config()``. Any field can be overridden with
``--config.<path>=<value>``. Rerunning with the same ``--workdir`` resumes from
the newest checkpoint there, and compiled programs come from JAX's persistent
compilation cache (``--compilation_cache``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from ota_train import configs

__all__ = ["main"]

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    default=str(configs.CONFIG_DIR / f"{configs.DEFAULT_CONFIG}.py"),
    help_string=f"Config file: a name of {configs.available()} or a path.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (default runs/<config name>); reruns resume from it."
)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    os.environ.get("OTA_TRAIN_DISTRIBUTED", "").lower() in ("1", "true", "yes"),
    "Call jax.distributed.initialize() first (multi-host; default from $OTA_TRAIN_DISTRIBUTED). "
    "Cluster settings are detected (TPU pods, SLURM, ...) or taken from the flags below.",
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    "With --distributed: host:port of process 0, as the others reach it "
    "(process 0 listens on $JAX_COORDINATOR_BIND_ADDRESS, default [::]:port).",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --distributed: process count.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --distributed: this process's id.")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache",
    None,
    "Directory of JAX's persistent compilation cache, so that reruns and resumed runs "
    "skip compiling (default: $JAX_COMPILATION_CACHE_DIR, else ~/.cache/ota_train/jax); "
    "'' turns it off.",
)


def _config_name() -> str:
    path = config_flags.get_config_filename(flags.FLAGS["config"])
    return Path(path.split(":", 1)[0]).stem


def _run(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {list(argv[1:])}")
    import jax

    if _DISTRIBUTED.value:
        if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
            # CPU processes exchange arrays through gloo (older JAX defaults to none).
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        # Before anything touches a device: every process must join first.
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
        )
    from ota_train import compilation_cache, trainer  # trainer imports TensorFlow: not at --help

    logging.getLogger("ota_train").setLevel(logging.INFO)
    cache = compilation_cache.enable(_COMPILATION_CACHE.value)
    workdir = _WORKDIR.value or os.path.join("runs", _config_name())
    if jax.process_index() == 0:
        logging.getLogger(__name__).info(
            "Training %s in %s on %d device(s), %d process(es); compilation cache: %s.",
            _config_name(),
            workdir,
            jax.device_count(),
            jax.process_count(),
            cache or "off",
        )
    from ota_jax.data.registry import DatasetNotPreparedError
    from ota_train.builders import ConfigError
    from ota_train.checkpoints import CheckpointError

    try:
        trainer.train_and_evaluate(_CONFIG.value, workdir)
    except (
        trainer.NonFiniteLossError,
        DatasetNotPreparedError,
        ConfigError,
        CheckpointError,
    ) as error:
        # Expected failures with a message that says what to do: no traceback.
        raise SystemExit(f"ota-train: {error}") from None


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``ota-train`` console script."""
    argv = sys.argv if argv is None else list(argv)
    try:
        argv = configs.resolve_config_argv(argv)
    except FileNotFoundError as error:
        raise SystemExit(f"ota-train: {error}") from None
    # ml_collections reads the --config.* overrides from sys.argv itself.
    sys.argv = argv
    app.run(_run, argv=argv)


if __name__ == "__main__":
    main()
