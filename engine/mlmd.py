"""The ML Metadata connection of a root: which store a config names, a store whose failed call names its cause, and
typed properties."""
from __future__ import annotations

import datetime
import json
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


class Store:
    """An MLMD store whose failed call names its own cause, on a fresh connection for the calls after it.

    MLMD's SQLite source leaves a transaction open when its COMMIT fails (a full disk): every later
    call on that connection then says only "Transaction already open", hiding why.
    """

    def __init__(self, connect, name: str):
        self._connect, self._name = connect, name
        self._store = connect()

    def __getattr__(self, attr: str):
        method = getattr(self._store, attr)
        if not callable(method):
            return method

        def call(*args, **kwargs):
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                reason = first_line(exc)
                try:
                    self._store = self._connect()  # the failed transaction goes with the old connection
                except Exception:
                    pass  # the next call says why it cannot connect
                full = "disk" in reason.lower() or "full" in reason.lower()
                raise MetadataError(f"{self._name}: the metadata store failed ({reason})" + (
                    "; the disk may be full: free space and run again: finished components are reused"
                    if full else "")) from None

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
