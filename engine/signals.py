"""SIGINT and SIGTERM during a run: raised as `Interrupted`, so the run is recorded `interrupted` at once."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

from engine.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Whether the run's records are final (`settle`), for the handlers of every `interruptible` block of the process.
_settled = [False]


@contextlib.contextmanager
def interruptible(process_ends: bool = False) -> Iterator[None]:
    """Within the block, the first SIGINT or SIGTERM raises `Interrupted` in the main thread; later ones
    are ignored, so the run's summary and records are written whole before the process exits (SIGKILL
    still stops it at once), and so is any once the run's records are final (`settle`). With `process_ends`
    (a command whose process ends with the run) signals stay ignored after the block once they are final, so
    that the exit code is the one they record, whenever a signal comes. Outside the main thread (where Python
    cannot take signals) it does nothing.

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
    _settled[0] = False  # a run starts

    def handler(signum, frame):
        if not received and not _settled[0]:
            received.append(signum)
            raise Interrupted(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, signal.SIG_IGN if process_ends and _settled[0] else old)


def settle() -> None:
    """The run's records (its summary and the store's end of it) are final: from now on a signal changes nothing.

    Recording `interrupted` over them would make them lie (a run that pushed did push: the version serves) and
    writing them again would open another window for the next signal; so the process ends as they say, exit code
    included (0 pushed, 3 blocked, 4 not blessed, ...), rather than as a signal would end it (130, or 143).
    """
    _settled[0] = True


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
