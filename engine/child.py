"""A Python child process that dies with its parent, watched until it exits: trials and multi-worker training."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

POLL_SECONDS = 0.5  # how often the parent looks at what the child wrote (its progress, its log)


def supervise(module: str, args: list[str], env: dict[str, str], stderr: Path,
              watch: Callable[[], None] = lambda: None) -> int:
    """Runs `python -m module *args` with `env`, its stderr in the file `stderr`, calling `watch` every
    POLL_SECONDS and once more after it exits; returns its exit code.

    The child is killed when this process is interrupted (KeyboardInterrupt, a signal turned into an
    exception) and, on Linux, when this process is killed outright: a resumed parent never races an
    orphan for the same files. stderr goes to a file, not a pipe, so a chatty child never blocks.

    Example:
        >>> import os, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     supervise("json.tool", ["--help"], dict(os.environ), Path(tmp) / "stderr.log")
        0
    """
    with open(stderr, "w") as errors:
        child = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.DEVNULL, stderr=errors,
                                 env=env, preexec_fn=_die_with_parent)
        try:
            while True:
                try:
                    code = child.wait(timeout=POLL_SECONDS)
                except subprocess.TimeoutExpired:
                    code = None
                watch()
                if code is not None:
                    return code
        except BaseException:
            child.kill()
            child.wait()
            raise


def last_error_line(stderr: Path) -> str:
    """The last non-blank line of a child's stderr file, or 'no output'."""
    lines = [line for line in stderr.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _die_with_parent() -> None:
    """Runs in the child before it starts: a parent killed with SIGKILL takes its child along (Linux)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
