"""Atomic file writes: a reader sees the old file or the new one, never half of one."""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_text(path: Path, text: str) -> None:
    """Writes a file atomically, creating its directory.

    Example:
        >>> write_text(Path("/tmp/root/runs/x/config.yaml"), "seed: 42\\n")
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, data: dict) -> None:
    """Writes JSON atomically (values JSON cannot hold are written as their text).

    Example:
        >>> write_json(Path("/tmp/root/runs/x/summary.json"), {"status": "pushed"})
    """
    write_text(path, json.dumps(data, indent=2, default=str))
