"""Stopping a run cleanly on SIGINT or SIGTERM (Ctrl-C, `timeout`, a closed terminal).

The handler sets :data:`STOP` (threads that wait on devices check it: Flower's ServerApp
runs in a thread of its own) and raises :class:`RunInterrupted` in the main thread. The
run then records ``interrupted`` in its manifest, keeps every finished stage and round
checkpoint, and shuts Ray down so that no actor outlives it; ``siftsim run --resume``
continues from there.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["STOP", "RunInterrupted", "check", "reclaim_signals", "stop_on_signals"]

STOP = threading.Event()
_ACTIVE: list = []   # the handler while a stop_on_signals block runs


class RunInterrupted(KeyboardInterrupt):
    """The run was asked to stop (a signal); finished work is kept."""


def check() -> None:
    """Raise :class:`RunInterrupted` if a stop was requested (for waiting threads)."""
    if STOP.is_set():
        raise RunInterrupted("stop requested")


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within this block, SIGINT and SIGTERM stop the run (main thread only)."""
    def handler(signum: int, _frame: object) -> None:
        STOP.set()
        raise RunInterrupted(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    STOP.clear()
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    _ACTIVE.append(handler)
    try:
        yield
    finally:
        _ACTIVE.remove(handler)
        for s, h in previous.items():
            signal.signal(s, h)


def reclaim_signals() -> None:
    """Install our handlers again after a library replaced them: ``ray.init`` puts a
    C++ handler on SIGTERM that aborts the process (no manifest, no cleanup)."""
    if _ACTIVE and threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, _ACTIVE[-1])
