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

SIGTERM (preemption) and SIGINT (Ctrl-C) save a checkpoint of the current step
and exit with status 143 and 130; a rerun resumes from it. Not under
``--distributed``, where ``jax.distributed.initialize`` lets JAX's preemption
notifier take SIGTERM (hosts would also have to agree on the step to save at).
A bad flag or config value exits with status 2, a failed run with status 1, each
with one line.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from absl import app, flags
from ml_collections import config_flags

from ota_train import configs, interrupts

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


def _usage_error(message: str) -> NoReturn:
    """A bad command line: one line on stderr, status 2."""
    sys.stderr.write(f"ota-train: error: {message} (see ota-train --help)\n")
    raise SystemExit(2)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, a bad flag or config key reported in one line."""
    # The --config.* override flags of an earlier parse in this process (tests).
    for name in [name for name in flags.FLAGS if name.startswith("config.")]:
        delattr(flags.FLAGS, name)
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        _usage_error(" ".join(str(error).split()))
    except (AttributeError, KeyError) as error:  # ml_collections: an unknown config key.
        key = str(error).strip("\"'")
        given = [a.split("=")[0] for a in argv if a.lstrip("-").startswith("config.")]
        where = next((a for a in given if key in a.split(".")), None)
        _usage_error(f"unknown config key {key!r}" + (f" in {where}" if where else ""))


def _help(argv: Sequence[str]) -> None:
    """``--help``: the flags of this command and the keys of the chosen config."""
    lines = [__doc__.strip(), "", "Flags:"]
    for flag in sorted(flags.FLAGS.get_flags_for_module(__name__), key=lambda f: f.name):
        default = configs.DEFAULT_CONFIG if flag.name == "config" else flag.default
        default = "" if default in (None, "") else f" (default: {default!r})"
        text = textwrap.fill(
            f"--{flag.name}: {flag.help}{default}", width=88, subsequent_indent="      "
        )
        lines.append(f"  {text}")
    spec = str(configs.CONFIG_DIR / f"{configs.DEFAULT_CONFIG}.py")
    for i, arg in enumerate(argv):
        if arg in ("--config", "-config") and i + 1 < len(argv):
            spec = argv[i + 1]
        elif arg.startswith(("--config=", "-config=")):
            spec = arg.split("=", 1)[1]
    try:
        keys = _config_keys(configs.resolve_config_path(spec))
    except Exception as error:  # A broken config file must not break --help.
        keys = [f"  (cannot load {spec}: {error})"]
    name = Path(spec.split(":", 1)[0]).stem
    lines += ["", f"Config keys of {name!r}, each settable with --config.<key>=<value>:", *keys]
    print("\n".join(lines))


def _config_keys(spec: str) -> list[str]:
    import importlib.util

    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_ota_train_help_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()

    def walk(branch, prefix: str):
        for key in sorted(branch.keys()):
            value = branch[key]
            if hasattr(value, "keys") and hasattr(value, "to_dict"):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"  {prefix}{key} = {value!r}"

    return list(walk(config, ""))


def _prepare_workdir(workdir: str) -> list[str]:
    """Creates ``workdir`` if needed and checks it takes files; returns the dirs created."""
    if "://" in workdir:  # A bucket: nothing to create, the first write tells.
        return []
    workdir = os.path.abspath(workdir)
    created = []
    path = workdir
    while not os.path.exists(path):
        created.append(path)
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        _usage_error(f"--workdir={workdir}: {path} is a file, not a directory")
    try:
        os.makedirs(workdir, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".ota-train-probe-", dir=workdir)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        _remove_if_empty(created)
        _usage_error(f"--workdir={workdir} is not writable ({error.strerror or error})")
    return created


def _remove_if_empty(created: list[str]) -> None:
    """Removes the directories this run created (deepest first) if they hold no file."""
    for path in created:  # Deepest first.
        if os.path.isdir(path) and not any(files for _, _, files in os.walk(path)):
            shutil.rmtree(path, ignore_errors=True)


def _os_error(error: BaseException) -> OSError | None:
    """The OSError behind ``error`` (orbax and TensorFlow wrap them), if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno is not None:
            return error
        if "No space left on device" in str(error):
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        error = error.__cause__ or error.__context__
    return None


class _OwnInfoOnly(logging.Filter):
    """INFO lines of ota_train and ota_jax only: orbax, TFDS and JAX log dozens per run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.startswith(
            ("ota_train", "ota_jax", "__main__")
        )


_OWN_INFO_ONLY = _OwnInfoOnly()


def _run(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        _usage_error(f"unexpected arguments: {list(argv[1:])}")
    from absl import logging as absl_logging

    absl_logging.get_absl_handler().addFilter(_OWN_INFO_ONLY)
    from ota_train import builders

    config = _CONFIG.value
    try:
        builders.validate(config)
    except builders.ConfigError as error:
        _usage_error(str(error))
    workdir = _WORKDIR.value or os.path.join("runs", _config_name())
    created = _prepare_workdir(workdir)
    interrupts.at_exit(lambda: _remove_if_empty(created))
    try:
        _train(config, workdir)
    except interrupts.Interrupted as interrupted:
        sys.stderr.write(f"ota-train: {interrupted}\n")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(interrupted.exit_code)  # Skip slow interpreter teardown (tf.data threads).
    except BaseException:
        _remove_if_empty(created)
        raise


def _train(config, workdir: str) -> None:
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
        trainer.train_and_evaluate(config, workdir)
    except ConfigError as error:
        _usage_error(str(error))
    except (
        trainer.NonFiniteLossError,
        DatasetNotPreparedError,
        CheckpointError,
    ) as error:
        # Expected failures with a message that says what to do: no traceback.
        raise SystemExit(f"ota-train: {error}") from None
    except Exception as error:
        if (os_error := _os_error(error)) is None:
            raise
        where = f" ({os_error.filename})" if os_error.filename else ""
        hint = (
            "; free some space and rerun: training resumes from the newest checkpoint"
            if os_error.errno in (errno.ENOSPC, errno.EDQUOT)
            else ""
        )
        raise SystemExit(f"ota-train: {os_error.strerror or os_error}{where}{hint}") from None
    if jax.process_index() == 0:
        path = os.path.abspath(workdir)
        logging.getLogger(__name__).info(
            "Done: %s, %s; checkpoints in %s; metrics in %s",
            os.path.join(path, "eval.json"),
            os.path.join(path, "detections.png"),
            os.path.join(path, trainer.CHECKPOINT_DIR),
            os.path.join(path, "metrics.jsonl"),
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``ota-train`` console script."""
    if argv is None:  # The command itself, not a caller in Python (tests).
        interrupts.install()
        argv = sys.argv
    argv = list(argv)
    if any(arg in ("-h", "-help", "--help", "--helpshort", "--helpfull", "-?") for arg in argv):
        _help(argv)
        raise SystemExit(0)
    try:
        argv = configs.resolve_config_argv(argv)
    except FileNotFoundError as error:
        _usage_error(str(error))
    # ml_collections reads the --config.* overrides from sys.argv itself.
    sys.argv = argv
    app.run(_run, argv=argv, flags_parser=_parse_flags)


if __name__ == "__main__":
    main()
