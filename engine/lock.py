"""The lock on a pipeline root: one run at a time writes its artifacts, metadata store and serving directory."""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Iterator

from engine.errors import LockedError, PipelineError
from engine.files import writable_root

log = logging.getLogger("pipeline")
LOCK = ".lock"


@contextlib.contextmanager
def exclusive(path: str | Path, create: bool = True, waiting: str | None = None) -> Iterator[None]:
    """Holds an exclusive flock on `path` (a lock file, created if needed, or a directory: then no file
    is left behind) for the block; the kernel releases it if the process dies. With `waiting`, that line
    is logged when another process holds the lock, before waiting for it.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as store_directory, exclusive(store_directory, create=False):
        ...     print("only this process opens the store now")
        only this process opens the store now
    """
    handle = os.open(path, (os.O_RDWR | os.O_CREAT) if create else os.O_RDONLY, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                log.info("%s", waiting)
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            # NFS emulates flock with a write lock, which a directory opened read-only cannot take: a lock
            # file in the directory does it there.
            if not os.path.isdir(path):
                raise
            os.close(handle)
            handle = os.open(Path(path) / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # closing releases the lock


def _lock_file(path: Path):
    """The root's lock file, opened; a `.lock` that is a directory, a dangling link or unreadable is refused in
    one line naming it and what to do (a dangling link is not followed to create its target)."""
    what = ("a directory" if path.is_dir() else "a symbolic link to nothing" if path.is_symlink() and
            not path.exists() else None)
    try:
        if what is None:
            return open(path, "a+")
    except OSError as exc:
        what = f"cannot be opened ({exc.strerror})"
    raise PipelineError(f"{path}: {what}, not the root's lock file; remove it (the pipeline makes it again) and "
                        "run again")


def _holder(handle) -> str:
    handle.seek(0)
    try:
        info = json.loads(handle.read() or "{}")
    except ValueError:
        info = {}
    return f"run {info.get('run_id', '?')} (pid {info.get('pid', '?')})"


@contextlib.contextmanager
def root_lock(root: str | Path, run_id: str, wait: bool = True, shared: bool = False) -> Iterator[None]:
    """Holds `<root>/.lock` for the duration of a run.

    A second run on the root waits (saying which run it waits for) or, with `wait=False`, fails at
    once. The lock is the kernel's (flock): a run killed with SIGKILL releases it, so a crash never
    leaves a stale lock behind. The members of one distributed search take it `shared`: they run
    together, and a normal run waits for all of them.

    Raises:
        LockedError: `wait` is False and another run holds the lock.
        ConfigError, PipelineError: the root is a file or cannot be written (`files.writable_root`), or its
            `.lock` is not a file the lock can be taken on (a directory, a dangling link).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as root, root_lock(root, "run-1"):
        ...     with root_lock(root, "run-2", wait=False):  # a second run on the same root
        ...         pass
        Traceback (most recent call last):
        engine.errors.LockedError: ...: run run-1 (pid ...) is running on this root; wait for it (drop --no-wait) ...
    """
    path = writable_root(root) / LOCK
    with _lock_file(path) as handle:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            if not wait:
                raise LockedError(f"{root}: {holder} is running on this root; wait for it (drop --no-wait) "
                                  "or use another --root") from None
            log.info("waiting for %s to finish: it holds the lock on %s", holder, root)
            fcntl.flock(handle, mode)
        if not shared:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"run_id": run_id, "pid": os.getpid()}))
            handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
