"""Paths kept relative to the pipeline root, so a root moved, copied or mounted elsewhere keeps its history."""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable

from engine.errors import ConfigError

ROOT_ID = ".root-id"  # names the root in the metadata store; created once, it moves and copies with the root
SCHEME = "pipeline-root://"  # a stored uri under a root: pipeline-root://<root id>/<path relative to the root>
PLACEHOLDER = "<root>"  # a root's own path in a cache key: the key holds wherever the root is


def root_id(root: str | Path, create: bool = False) -> str | None:
    """The id of the root at `root` (its `.root-id` file); None when it has none and `create` is False.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as root:
        ...     root_id(root), root_id(root, create=True) == root_id(root), len(root_id(root))
        (None, True, 16)
    """
    path = Path(root) / ROOT_ID
    if not path.is_file():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(secrets.token_hex(8) + "\n")
        try:  # a link never replaces: when processes start on a new root at once, the first id wins
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links (FUSE, SMB): exclusive creation decides there
            try:
                with open(path, "x") as f:
                    f.write(tmp.read_text())
            except FileExistsError:
                pass
        finally:
            tmp.unlink()
    rid = path.read_text().strip()
    if not rid:
        raise ConfigError(f"{path}: the root's id is empty; delete the file and run again (a new id is made)")
    return rid


def copied_from(root: str | Path, last: str | None) -> bool:
    """Whether `root` is a copy of the root that last ran under its id at `last`: that directory still
    exists, is another directory (not the same one mounted or linked elsewhere) and holds the same id.

    Example:
        >>> import shutil, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = root_id(f"{tmp}/root", create=True)
        ...     _ = shutil.copytree(f"{tmp}/root", f"{tmp}/copy")  # `cp -a root copy`
        ...     copied_from(f"{tmp}/copy", f"{tmp}/root"), copied_from(f"{tmp}/root", f"{tmp}/root")
        (True, False)
    """
    if not last or not Path(last).is_dir():
        return False  # moved, or never ran elsewhere: the same root
    try:
        return not os.path.samefile(last, root) and root_id(last) == root_id(root)
    except (OSError, ConfigError):
        return False


def renew_id(root: str | Path) -> str:
    """Gives `root` a new id (a copy starting a history of its own in a store it shares) and returns it."""
    path = Path(root) / ROOT_ID
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(secrets.token_hex(8) + "\n")
    os.replace(tmp, path)
    return path.read_text().strip()


def under(uri: str | Path, root: str | Path) -> str | None:
    """`uri` relative to `root` (with `/`), or None when it is not under the root.

    Example:
        >>> under("/tmp/root/artifacts/train/ab12", "/tmp/root"), under("/srv/models/1", "/tmp/root")
        ('artifacts/train/ab12', None)
    """
    if not str(uri):
        return None
    try:
        return Path(uri).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return None


def to_stored(uri: str | Path, root: str | Path, owner: str | None) -> str:
    """How the store records `uri`: under the root, by the root's id (`owner`) and the relative path; outside
    it (or for a root without an id), the absolute path.

    Example:
        >>> to_stored("/tmp/root/serving/1", "/tmp/root", "3f9c0a1b5d2e7f48")
        'pipeline-root://3f9c0a1b5d2e7f48/serving/1'
    """
    if str(uri).startswith(SCHEME) or not str(uri):
        return str(uri)
    relative = under(uri, root) if owner else None
    return f"{SCHEME}{owner}/{relative}" if relative is not None else os.path.abspath(uri)


def resolve(stored: str, root: str | Path, owner: str | None,
            locate: Callable[[str], str | None] | None = None) -> str:
    """The path a stored uri names now: under `root` for this root's id (`owner`), under where `locate`
    says another root was last run for its id; an absolute path (older stores) as it is.

    Example:
        >>> resolve("pipeline-root://3f9c0a1b5d2e7f48/serving/1", "/mnt/root", "3f9c0a1b5d2e7f48")
        '/mnt/root/serving/1'
    """
    if not stored.startswith(SCHEME):
        return stored
    rid, _, relative = stored[len(SCHEME):].partition("/")
    base = root if rid == owner else (locate(rid) if locate else None)
    return str(Path(base) / relative) if base else stored


def portable(value, root: str | Path):
    """A parameter as a cache key sees it: a path under the root is spelled from `<root>`, so moving the
    root keeps its keys; any other value is unchanged."""
    if isinstance(value, Path):
        relative = under(value, root)
        if relative is not None:
            return f"{PLACEHOLDER}/{relative}"
    return value
