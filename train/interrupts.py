"""SIGTERM and SIGINT (preemption, Ctrl-C): save the current step, then exit 143 / 130.

`install` (called by ``ota-train``, never on import) replaces both signals'
default actions. A watcher thread learns of a signal at once through
`signal.set_wakeup_fd`, even while the main thread is inside a long C++ call
(an XLA compile, a ``tf.data`` read), where Python signal handlers cannot run:

- while the training loop runs (`enter_loop` .. `leave_loop`), the loop sees `requested`
  after its current step, saves a checkpoint of that step and raises
  `Interrupted`; if the loop has not taken the request within ``grace``
  seconds (compiling, loading data, an evaluation), the process exits without
  a new checkpoint: a rerun resumes from the newest one and runs the steps
  after it again;
- anywhere else (start-up, the final evaluation) the process exits at once;
- a second signal exits at once.

In a ``jax.distributed`` run, JAX's preemption service takes SIGTERM instead
(``jax.distributed.initialize`` replaces the signal's handler): it tells every
process and picks a step they all reach, where `preempted` says to stop, so
that they save one checkpoint together. There is no grace deadline then; the
scheduler's own (SIGKILL) stays. SIGINT still reaches only its own process.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

__all__ = [
    "Interrupted",
    "acknowledge",
    "at_exit",
    "enter_loop",
    "exit_code",
    "install",
    "leave_loop",
    "preempted",
    "requested",
]

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_lock = threading.Lock()
_requested: int | None = None
_in_loop = False
_acknowledged = threading.Event()
_installed = False
_at_exit: list[Callable[[], None]] = []


class Interrupted(Exception):
    """Training stopped on a signal after saving the checkpoint of ``step``."""

    def __init__(self, signum: int, step: int, directory: str) -> None:
        self.signum = signum
        self.step = step
        super().__init__(
            f"{signal.Signals(signum).name} at step {step}: saved checkpoint {step} in "
            f"{directory}; rerun the same command to resume"
        )

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)


def exit_code(signum: int) -> int:
    """The shell's status for death by ``signum``: 143 for SIGTERM, 130 for SIGINT."""
    return 128 + signum


def requested() -> int | None:
    """The signal asking training to stop, or None."""
    return _requested


def preempted(step: int) -> int | None:
    """SIGTERM once every process of a ``jax.distributed`` run has reached the step
    JAX's preemption service agreed on after a SIGTERM (to one of them); else None.

    Call it after every step on every process (the service's protocol). Without
    ``jax.distributed``, or with its preemption service off, it is always None: SIGTERM
    then reaches `requested` as any signal does.
    """
    from jax.experimental import multihost_utils

    try:
        reached = multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:  # jax_enable_preemption_service is off: Python keeps SIGTERM.
        return None
    return signal.SIGTERM if reached else None


def acknowledge() -> None:
    """The loop has seen the request and is saving: no deadline any more."""
    _acknowledged.set()


def enter_loop() -> None:
    """The training loop starts: a signal is now answered by a checkpoint."""
    global _in_loop
    with _lock:
        _in_loop = True


def leave_loop() -> None:
    """The training loop is over: a signal now exits at once."""
    global _in_loop
    with _lock:
        _in_loop = False


def at_exit(function: Callable[[], None]) -> None:
    """Calls ``function`` before a signal ends the process outside the loop's saving."""
    _at_exit.append(function)


def _exit(signum: int, why: str) -> None:
    for function in _at_exit:
        try:
            function()
        except Exception:  # Exiting regardless.
            pass
    name = signal.Signals(signum).name
    os.write(2, f"\nota-train: {name} {why}.\n".encode())
    os._exit(exit_code(signum))


def _handler(signum: int, frame: object) -> None:
    """The Python-level handler: nothing to do, the watcher already acted."""


def _watch(fd: int, grace: float) -> None:
    global _requested
    while True:
        for signum in os.read(fd, 64):
            if signum not in _SIGNALS:
                continue
            with _lock:
                first = _requested is None
                if first:
                    _requested = signum
                in_loop = _in_loop
            if not first:
                _exit(signum, "again; exiting without waiting for the checkpoint")
            if not in_loop:
                _exit(signum, "outside the training loop; exiting (the newest checkpoint stays)")
            threading.Thread(target=_deadline, args=(signum, grace), daemon=True).start()


def _deadline(signum: int, grace: float) -> None:
    if not _acknowledged.wait(grace):
        _exit(
            signum,
            f"while compiling or loading data (no step finished within {grace:g} s); "
            "exiting without a new checkpoint, a rerun resumes from the newest one",
        )


def install(*, grace: float = 5.0) -> None:
    """Handles SIGTERM and SIGINT as the module docstring says (main thread only)."""
    global _installed
    if _installed:
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for signum in _SIGNALS:
        signal.signal(signum, _handler)
    threading.Thread(target=_watch, args=(read_fd, grace), daemon=True, name="signals").start()
    _installed = True
