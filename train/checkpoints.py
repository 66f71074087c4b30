"""Orbax checkpoints of a `TrainState`: saved every N steps, restored on restart.

Only the arrays are saved (``step``, ``params``, ``rest``, ``opt_state``); the
model structure, optimizer and loss settings come from the config. Orbax
writes each checkpoint to a temporary directory and renames it when complete,
so a run killed mid-save leaves the previous checkpoints intact and the next
run deletes the partial one.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from ota_jax.detector import TrainState

__all__ = ["CheckpointError", "Checkpoints", "UnreadableCheckpoint", "all_finite"]


class CheckpointError(RuntimeError):
    """A state that must not be saved (non-finite), or a checkpoint that does not fit."""


class UnreadableCheckpoint(NamedTuple):
    """A checkpoint that failed to restore while an older one restored."""

    step: int
    error: str  # One line: the exception's type and the start of its message.
    moved_to: str | None  # Where it was set aside; None: deleted (remote or multi-host).


def _one_line(error: BaseException, limit: int = 120) -> str:
    text = " ".join(str(error).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _arrays(state: TrainState) -> dict[str, Any]:
    return {
        "step": state.step,
        "params": state.params,
        "rest": state.rest,
        "opt_state": state.opt_state,
    }


@jax.jit
def all_finite(tree: Any) -> jax.Array:
    """``[]`` bool: no NaN or inf in any floating-point leaf of ``tree``."""
    checks = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(leaf.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


class Checkpoints:
    """A `orbax.checkpoint.CheckpointManager` over ``directory`` for train states."""

    def __init__(self, directory: str, *, max_to_keep: int, async_save: bool = True) -> None:
        """Opens (creating) ``directory``; partial checkpoints of a killed run are ignored.

        Args:
          directory: where the step folders go (absolute, or a ``gs://`` URL).
          max_to_keep: older checkpoints beyond this many are deleted.
          async_save: write in a background thread while training goes on.
        """
        self.directory = directory if "://" in directory else os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=True,
            # A run killed mid-save leaves a temporary directory: remove it on restart.
            cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of every complete checkpoint, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, state: TrainState) -> int:
        """Saves ``state`` under its step (asynchronously when so configured).

        Raises:
          CheckpointError: the state holds NaN or inf; nothing is written, so
            the newest checkpoint stays the last good one.
        """
        step = int(state.step)
        if not bool(all_finite(_arrays(state))):
            raise CheckpointError(f"refusing to save the non-finite state of step {step}")
        self._manager.save(step, args=ocp.args.StandardSave(_arrays(state)), force=True)
        return step

    def restore(self, state: TrainState, step: int | None = None) -> TrainState:
        """``state`` with its arrays read from checkpoint ``step`` (default: the newest).

        ``state`` gives the structure, dtypes and shardings (e.g. a freshly
        initialised, replicated state of the same config).

        Raises:
          CheckpointError: no checkpoint, or one of another model or optimizer.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _arrays(state))
        try:
            arrays = self._manager.restore(step, args=ocp.args.StandardRestore(target))
        except (ValueError, KeyError) as error:
            raise CheckpointError(
                f"checkpoint {step} in {self.directory} does not fit this config's model and "
                f"optimizer (use another workdir for a different config): {error}"
            ) from error
        return state.replace(**arrays)

    def restore_newest_readable(
        self, state: TrainState
    ) -> tuple[TrainState, int, list[UnreadableCheckpoint]]:
        """``state`` restored from the newest checkpoint that reads, newest first.

        Checkpoints newer than that one (truncated or corrupt files) are set aside
        (moved to ``<directory>.unreadable/<step>``, or deleted where that is not a
        local directory), so that training can save those steps again.

        Returns:
          The restored state, its step (0 and ``state`` itself when there is no
          checkpoint), and the unreadable checkpoints that were set aside.

        Raises:
          CheckpointError: no checkpoint reads (with the newest one's error, e.g. it
            does not fit this config's model and optimizer); nothing is set aside.
        """
        failures: list[tuple[int, BaseException]] = []
        for step in reversed(self.all_steps()):
            try:
                restored = self.restore(state, step)
            except Exception as error:  # Orbax (tensorstore) raises a plain Exception.
                failures.append((step, error))
                continue
            return restored, step, [self._set_aside(s, e) for s, e in failures]
        if failures:
            step, error = failures[0]
            reason = str(error) if isinstance(error, CheckpointError) else _one_line(error)
            raise CheckpointError(
                f"no checkpoint in {self.directory} can be read; the newest, {step}: {reason}"
            ) from error
        return state, 0, []

    def _set_aside(self, step: int, error: BaseException) -> UnreadableCheckpoint:
        moved_to = None
        if "://" in self.directory or jax.process_count() > 1:
            self._manager.delete(step)
        else:
            aside = f"{self.directory}.unreadable"
            os.makedirs(aside, exist_ok=True)
            moved_to = os.path.join(aside, str(step))
            if os.path.exists(moved_to):
                shutil.rmtree(moved_to)
            os.rename(os.path.join(self.directory, str(step)), moved_to)
            self._manager.reload()
        return UnreadableCheckpoint(step, _one_line(error), moved_to)

    def wait(self) -> None:
        """Blocks until every save in flight is complete."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
