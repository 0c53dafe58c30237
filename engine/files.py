"""Atomic file writes (a reader sees the old file or the new one, never half of one), and a writable root."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_text(path: Path, text: str) -> None:
    """Writes a file atomically, creating its directory.

    Example:
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     write_text(Path(tmp) / "runs/x/config.yaml", "seed: 42\\n")
        ...     (Path(tmp) / "runs/x/config.yaml").read_text()
        'seed: 42\\n'
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, data: dict) -> None:
    """Writes JSON atomically (values JSON cannot hold are written as their text).

    Example:
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     write_json(Path(tmp) / "summary.json", {"status": "done", "seconds": 1.5})
        ...     json.loads((Path(tmp) / "summary.json").read_text())
        {'status': 'done', 'seconds': 1.5}
    """
    write_text(path, json.dumps(data, indent=2, default=str))


def writable_root(root: str | Path) -> Path:
    """Creates the pipeline root when missing and returns it; refuses, in one line, a root that is a file
    or cannot be written (a read-only mount, no permission), before anything runs.

    Raises:
        ConfigError: `root` is an existing file.
        PipelineError: the root cannot be created or written.

    Example:
        >>> tmp = tempfile.TemporaryDirectory()
        >>> writable_root(Path(tmp.name) / "pipeline_root").is_dir()
        True
        >>> (Path(tmp.name) / "notes").touch()
        >>> writable_root(Path(tmp.name) / "notes")
        Traceback (most recent call last):
        engine.errors.ConfigError: --root ...notes: a file, not a directory; expected the pipeline root's directory
        >>> tmp.cleanup()
    """
    from engine.errors import ConfigError, PipelineError

    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--root {root}: a file, not a directory; expected the pipeline root's directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-check-"):  # unique: threads may probe at once
            pass
    except OSError as exc:
        where = exc.filename if isinstance(exc.filename, str) else root
        raise PipelineError(f"{root}: cannot write the pipeline root ({exc.strerror} at {where}); "
                            "expected a writable directory (or choose another --root)") from None
    return root
