"""Counting XLA compilations with JAX's own monitoring events."""

from __future__ import annotations

import jax

_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileCounter:
    """Counts backend compilations while it is open (``with COUNTER: ...``)."""

    def __init__(self):
        self.count = 0
        self._open = False

    def __enter__(self) -> CompileCounter:
        self.count, self._open = 0, True
        return self

    def __exit__(self, *exc) -> None:
        self._open = False

    def __call__(self, event: str, duration: float, **kwargs) -> None:
        if self._open and event == _EVENT:
            self.count += 1


COUNTER = CompileCounter()
jax.monitoring.register_event_duration_secs_listener(COUNTER)
