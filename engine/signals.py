"""SIGINT and SIGTERM during a run: raised as `Interrupted`, so the run is recorded `interrupted` at once."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

from engine.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, the first SIGINT or SIGTERM raises `Interrupted` in the main thread; later ones
    are ignored, so the run's summary and records are written whole before the process exits (SIGKILL
    still stops it at once). Outside the main thread (where Python cannot take signals) it does nothing.

    Example:
        >>> try:
        ...     with interruptible():
        ...         signal.raise_signal(signal.SIGINT)  # Ctrl-C, or `kill -TERM <pid>`
        ... except Interrupted as stop:
        ...     print(stop.signal_name)
        SIGINT
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum, frame):
        if not received:
            received.append(signum)
            raise Interrupted(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM wait: what it writes (a run's records) is never cut in two.

    A signal that arrives meanwhile is delivered when the block ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
