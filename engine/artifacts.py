"""Typed artifacts passed between components: small frozen records with a `uri` and a fingerprint."""
from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

RECORD = "artifact.json"  # written last into an artifact's directory: its presence means complete
RELATIVE = "uri_relative"  # in a record: its `uri` is relative to the record's directory (it moves with the root)
ARTIFACT_TYPES: dict[str, type] = {}  # kind: class, filled as artifact types are declared


def _decode(hint, value):
    """Turns JSON lists back into the tuples (of records) a frozen artifact holds."""
    if typing.get_origin(hint) is tuple:
        return tuple(_decode(typing.get_args(hint)[0], v) for v in value)
    if dataclasses.is_dataclass(hint):
        return hint(**value)
    return value


@dataclass(frozen=True)
class Artifact:
    """Base of all artifacts. `fingerprint` identifies the content, for caching and lineage."""

    uri: str
    fingerprint: str

    kind: ClassVar[str] = "Artifact"
    # A property naming where the data came from: the store counts an artifact's distinct fingerprints per
    # value of it as spans (its `span`), in order of arrival. None: not spanned.
    span_of: ClassVar[str | None] = None
    # The columns of a run's row (`Metadata.runs`) this kind fills from its properties: (column, property).
    run_columns: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init_subclass__(cls, **kwargs):
        """Registers each artifact type by its kind, so a component module can declare its own."""
        super().__init_subclass__(**kwargs)
        ARTIFACT_TYPES[cls.kind] = cls

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Artifact":
        hints = typing.get_type_hints(cls)
        # A field added since the record was written takes its default.
        return cls(**{f.name: _decode(hints[f.name], data[f.name])
                      for f in dataclasses.fields(cls) if f.name in data})

    @staticmethod
    def described(properties: dict[str, Any]) -> str:
        """One line about an artifact of this kind from its recorded properties (`runs lineage`)."""
        return f"fingerprint {properties.get('fingerprint')}"

    def intact(self) -> bool:
        """Whether the files this artifact describes are still there."""
        return (Path(self.uri) / RECORD).is_file()

    def relocated(self, uri: str) -> "Artifact":
        return dataclasses.replace(self, uri=uri)


def record_uri(record: dict[str, Any], directory: str | Path) -> str:
    """The uri an artifact's record (found in `directory`) names, wherever the root now is.

    A record written under the root names its uri relative to its own directory. An older record's absolute
    uri that ends in this directory's `<component>/<key>` named this very directory before it moved.
    """
    uri = record["uri"]
    if record.get(RELATIVE):
        return os.path.normpath(Path(directory) / uri)
    if Path(uri).is_absolute() and Path(uri).parts[-2:] == Path(directory).absolute().parts[-2:]:
        return str(Path(directory))
    return uri


def load(uri: str | Path) -> Artifact:
    """Reads the artifact recorded in `uri` (its `artifact.json`), its uri resolved where the record is."""
    data = json.loads((Path(uri) / RECORD).read_text())
    data["uri"] = record_uri(data, uri)
    return ARTIFACT_TYPES[data.pop("type")].from_dict(data)
