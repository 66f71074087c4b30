"""The smoke run that test_train.py and test_train_cli.py share, and helpers to read runs.

A run is the smoke config (64x64 ``ota_shapes/tiny``, batch 4, the tiny model) for
``STEPS`` steps with a checkpoint every ``CHECKPOINT_EVERY``. Every run shares one
learning-rate schedule, so a shorter run is a prefix of the full one.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import jax
import numpy as np

from ota_train import trainer
from ota_train.configs import smoke
from ota_train.metrics_writer import read_metrics

STEPS = 24
CHECKPOINT_EVERY = 8


def smoke_config(data_dir: str, steps: int = STEPS):
    """The smoke config for ``steps`` steps on the full run's schedule."""
    config = smoke.get_config()
    config.dataset.data_dir = data_dir
    config.train.steps = steps
    config.train.checkpoint_every = CHECKPOINT_EVERY
    config.optimizer.total_steps = STEPS
    return config


def flags(workdir: Path, data_dir: str, steps: int = STEPS) -> list[str]:
    """The command-line flags equivalent to ``smoke_config(data_dir, steps)``."""
    return [
        "--config",
        "smoke",
        f"--workdir={workdir}",
        f"--config.dataset.data_dir={data_dir}",
        f"--config.train.steps={steps}",
        f"--config.train.checkpoint_every={CHECKPOINT_EVERY}",
        f"--config.optimizer.total_steps={STEPS}",
    ]


def command() -> list[str]:
    """``ota-train`` as installed, else the module."""
    script = shutil.which("ota-train")
    return [script] if script else [sys.executable, "-m", "ota_train.main"]


def train_records(workdir: Path) -> list[dict]:
    return [r for r in read_metrics(str(workdir)) if "train/loss" in r]


def train_steps(workdir: Path) -> list[int]:
    return [r["step"] for r in train_records(workdir)]


def checkpoint_steps(workdir: Path) -> list[int]:
    """Complete checkpoints (orbax renames a finished one to its bare step number)."""
    directory = workdir / trainer.CHECKPOINT_DIR
    if not directory.exists():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def saved_arrays(workdir: Path, step: int) -> dict[str, np.ndarray]:
    """Every array of checkpoint ``step`` (params, optimizer state, ...) by path."""
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(str(workdir / trainer.CHECKPOINT_DIR)) as manager:
        arrays = manager.restore(step, args=ocp.args.StandardRestore())
    leaves = jax.tree_util.tree_flatten_with_path(arrays)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def saved_params(workdir: Path, step: int) -> dict[str, np.ndarray]:
    """The parameters of checkpoint ``step``, by path."""
    return {k: v for k, v in saved_arrays(workdir, step).items() if k.startswith("['params']")}
