"""Failpoints: named places where a crash test can hold the process until it is killed, whatever the machine's speed."""
from __future__ import annotations

import collections
import os
import signal
import time

# Comma-separated failpoint names, each optionally `name#n` (hold the nth time this process reaches it), and
# `name=SIGTERM` (or another signal's name): the process sends itself that signal there and goes on (with
# SIGKILL it dies there, as a task killed from outside would, recording nothing).
ENV = "PIPELINE_FAILPOINTS"
# A file the held process writes with the failpoint's name and its pid, so the test knows when to kill.
REACHED = "PIPELINE_FAILPOINT_REACHED"
# With this set, a held process goes on once the file it names exists (instead of waiting to be killed).
RELEASE = "PIPELINE_FAILPOINT_RELEASE"
_hits: collections.Counter = collections.Counter()


def failpoint(name: str) -> None:
    """Holds this process here when `PIPELINE_FAILPOINTS` names `name`; does nothing otherwise.

    A crash test sets the variable for the run it starts, waits for the file named by
    `PIPELINE_FAILPOINT_REACHED` and kills the process group: the kill lands exactly at this point,
    on a fast machine as on a slow one. With `PIPELINE_FAILPOINT_RELEASE`, the process goes on once
    that file exists: a test orders events across processes without timing them. `name=SIGTERM` lands
    a signal exactly there: the process raises it itself (its handler has run when it goes on). Without
    the variable this costs one dictionary lookup.
    """
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    _hits[name] += 1
    for spec in wanted.split(","):
        spec, _, raised = spec.strip().partition("=")
        point, _, nth = spec.partition("#")
        if point == name and (not nth or int(nth) == _hits[name]):
            _reached(name)
            if raised:
                signal.raise_signal(signal.Signals[raised])
            else:
                _hold()


def _reached(name: str) -> None:
    marker = os.environ.get(REACHED)
    if marker:
        tmp = f"{marker}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{name} {os.getpid()}\n")
        os.replace(tmp, marker)  # the test never reads half a line


def _hold() -> None:
    release = os.environ.get(RELEASE)
    while not (release and os.path.exists(release)):
        time.sleep(0.05 if release else 3600)
