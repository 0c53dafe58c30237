"""The ML Metadata connection of a root: which store a config names, a store whose failed call names its cause, and
typed properties."""
from __future__ import annotations

import datetime
import json
import os
import re
import resource
import typing
from pathlib import Path
from typing import Any

from engine.errors import MetadataError, first_line


def proto():
    from ml_metadata.proto import metadata_store_pb2

    return metadata_store_pb2


def connection_config(cfg) -> tuple[Any, str]:
    """The MLMD connection for a Config (SQLite `<root>/metadata.sqlite` unless `metadata.mysql`), and its name."""
    pb = proto()
    conn = pb.ConnectionConfig()
    mysql = cfg.metadata.mysql
    if mysql is not None:
        conn.mysql.host, conn.mysql.port, conn.mysql.database = mysql.host, mysql.port, mysql.database
        conn.mysql.user, conn.mysql.password = mysql.user, mysql.secret
        return conn, f"mysql://{mysql.user}@{mysql.host}:{mysql.port}/{mysql.database}"
    path = Path(cfg.metadata.sqlite or Path(cfg.root) / "metadata.sqlite")
    conn.sqlite.filename_uri = str(path)
    conn.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    return conn, str(path)


# MLMD wraps the database's reason in the record it was writing (a proto of up to ~1 KB) and the query.
QUERY_ERROR = re.compile(r"Error when executing query: (.*?) query:", re.S)
ROOM = 1 << 20  # less free room than this (a few pages and their journal) is no room for a store to grow in


def reason(exc: BaseException) -> str:
    """The cause of an MLMD error in a few words: the database's own, else the first line of the message.

    Example:
        >>> reason(RuntimeError('Cannot create node for type_id: 9 name: "r" properties { ... } Error when '
        ...                     'executing query: database or disk is full query: INSERT INTO `Context` ...'))
        'database or disk is full'
    """
    found = QUERY_ERROR.search(str(exc))
    return found.group(1).strip() if found else first_line(exc, limit=300)


def cannot_grow(name: str, why: str, path: Path | None) -> str | None:
    """The one-line message for a store that failed because it cannot grow, else None. SQLite says "database or
    disk is full" when its disk is (ENOSPC), and only "disk I/O error" when a write past a file-size limit
    (EFBIG) or a quota (EDQUOT) is refused: then the store's room decides (a failing disk says the same)."""
    if "database or disk is full" in why or ("disk I/O error" in why and path is not None and _no_room(path)):
        return (f"{name}: disk full ({why}: the metadata store cannot grow); free space and run again: "
                "finished components are reused")
    return None


def _no_room(path: Path) -> bool:
    """Whether the store's file cannot grow: its filesystem is (nearly) full, or this process may not write a
    file much larger (RLIMIT_FSIZE)."""
    try:
        free = os.statvfs(path.parent)
        size = path.stat().st_size if path.exists() else 0
    except OSError:
        return False
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return free.f_bavail * free.f_frsize < ROOM or (limit != resource.RLIM_INFINITY and size + ROOM > limit)


class Store:
    """An MLMD store whose failed call names its own cause, on a fresh connection for the calls after it.

    MLMD's SQLite source leaves a transaction open when its COMMIT fails (a full disk): every later
    call on that connection then says only "Transaction already open", hiding why.
    """

    def __init__(self, connect, name: str, path: Path | None = None):
        self._connect, self._name, self._path = connect, name, path
        self._store = connect()

    def __getattr__(self, attr: str):
        method = getattr(self._store, attr)
        if not callable(method):
            return method

        def call(*args, **kwargs):
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                why = reason(exc)
                try:
                    self._store = self._connect()  # the failed transaction goes with the old connection
                except Exception:
                    pass  # the next call says why it cannot connect
                failed = MetadataError(cannot_grow(self._name, why, self._path)
                                       or f"{self._name}: the metadata store failed ({why})")
                failed.reason = why
                raise failed from None

        return call


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def set_property(properties, name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        properties[name].bool_value = value
    elif isinstance(value, int):
        properties[name].int_value = value
    elif isinstance(value, float):
        properties[name].double_value = value
    elif isinstance(value, str):
        properties[name].string_value = value
    else:
        properties[name].string_value = json.dumps(value, sort_keys=True, default=str)


def get_property(properties, name: str) -> Any:
    if name not in properties:
        return None
    value = properties[name]
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


def property_type(hint) -> int:
    pb = proto()
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType")):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return {bool: pb.BOOLEAN, int: pb.INT, float: pb.DOUBLE, str: pb.STRING}.get(hint, pb.STRING)
