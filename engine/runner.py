"""Runs components with caching: an output is reused when its inputs, parameters and code version match,
and its files are still the ones written."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from engine import artifacts, paths
from engine.artifacts import RECORD, RELATIVE, Artifact
from engine.component import Component
from engine.dag import StopRun, between
from engine.errors import MetadataError, PipelineError, first_line
from engine.failpoints import failpoint
from engine.files import writable_root
from engine.lock import exclusive

log = logging.getLogger("pipeline")
FILES = "files"  # the key in an artifact's record listing its files: {relative path: [size, sha256]}


def manifest(directory: Path) -> dict[str, list]:
    """Size and SHA-256 of every file under `directory` but the record itself.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = (Path(tmp) / "schema.pbtxt").write_text("feature {}")
        ...     manifest(Path(tmp))
        {'schema.pbtxt': [10, '07a36d59...']}
    """
    return {str(path.relative_to(directory)): [path.stat().st_size, _sha256(path)]
            for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != RECORD)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def altered(directory: Path, files: dict[str, list]) -> str | None:
    """What differs between `directory` and its recorded manifest, or None when every file is as written.

    Sizes are compared first (cheap), so a missing or truncated file is found before any hashing.
    """
    for name, (size, _) in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
    for name, (_, sha) in files.items():
        if _sha256(directory / name) != sha:
            return f"{name} was changed after it was written (SHA-256 differs)"
    return None


def _digest(record: Path) -> str | None:
    """Identifies what an artifact's files were when written: the hash of its record (which lists them)."""
    try:
        return hashlib.sha256(record.read_bytes()).hexdigest()
    except OSError:
        return None


def remove_leftovers(directory: Path, pattern: str) -> None:
    """Removes what killed processes left in `directory`: entries matching `pattern` (ending in a pid)
    whose process is gone. A live process's entries (a concurrent distributed-search member) are kept."""
    for path in directory.glob(pattern):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)


def _lock_file(final: Path) -> Path:
    locks = final.parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    return locks / final.name


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"parameter of type {type(value).__name__} cannot be fingerprinted")


class Runner:
    """Executes components for one run, reusing cached outputs under `<root>/artifacts`.

    A cached output is used only when its record is readable and every file it lists still has the size
    and SHA-256 it was written with; otherwise the component runs again (`rebuilt` says why).
    `start` and `stop` bound a partial run (`--from`, `--to`, names from `order`): components before
    `start` must come from the cache, `start` and everything after it run again, and `StopRun` is raised
    once `stop` has finished. `metadata`, when given, records each execution (see `engine.metadata`).
    `shared`: other processes run on this root at once (a distributed search), so each output is looked
    up and computed under a lock of its own. `deadline`: when the run's whole-build budget ends (`time.time()`
    seconds), passed to components that take a `deadline`.
    """

    def __init__(self, root: str | Path, use_cache: bool = True, force: frozenset[str] = frozenset(),
                 run_dir: str | Path | None = None, order: tuple[str, ...] = (), start: str | None = None,
                 stop: str | None = None, metadata=None, shared: bool = False, deadline: float | None = None):
        self.root = writable_root(root)
        self.artifacts_dir = self.root / "artifacts"
        self.run_dir = Path(run_dir) if run_dir else None
        self.use_cache = use_cache
        between(order, start, stop)  # checks the names and their order
        self.upstream = frozenset(order[:order.index(start)]) if start else frozenset()
        rerun = frozenset(order[order.index(start):]) if start else frozenset()
        self.force = force | rerun  # executed even when cached (e.g. tune with --retune)
        self.start, self.stop = start, stop
        self.metadata = metadata
        self.shared = shared
        self.deadline = deadline
        self.records: dict[str, dict[str, Any]] = {}  # each component run: state, seconds, uri (and why rebuilt)
        self.outputs: dict[str, Artifact] = {}

    def forced(self, name: str) -> bool:
        """Whether `name` runs even when a cached output exists."""
        return name in self.force or not self.use_cache

    def cache_key(self, component: Component, inputs: tuple[Artifact, ...], params: dict) -> str:
        identity = {
            "component": component.name,
            "version": component.version,
            "inputs": [a.fingerprint if a is not None else None for a in inputs],
            "params": {name: paths.portable(value, self.root) for name, value in params.items()},
            "source": component.source_key(**params) if component.source_key else None,
        }
        blob = json.dumps(identity, sort_keys=True, default=_jsonable)
        return hashlib.sha256(blob.encode()).hexdigest()

    def __call__(self, component: Component, *inputs: Artifact, **params: Any) -> Artifact:
        for expected, got in zip(component.inputs, inputs, strict=True):
            if not isinstance(got, expected):  # `expected` may be a tuple of types, for optional inputs
                names = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
                raise TypeError(f"{component.name}: expected {names}, got {type(got).__name__}")
        start = time.monotonic()
        key = self.cache_key(component, inputs, params)
        final = self.artifacts_dir / component.name / key[:16]
        # Members of a distributed search share the root: the first to need an output computes it, the
        # others wait on its lock (`.locks/<key>` beside it) and take it from the cache.
        with exclusive(_lock_file(final)) if self.shared else contextlib.nullcontext():
            output, rebuilt, state = self._cached_or_executed(component, inputs, params, key, final, start)
        seconds = round(time.monotonic() - start, 2)
        self.records[component.name] = {"state": state, "seconds": seconds, "uri": output.uri,
                                           **({"rebuilt": rebuilt} if rebuilt and state == "executed" else {})}
        self.outputs[component.name] = output
        log.info("%-10s %-8s %7.1fs", component.name, state, seconds)
        if self.metadata is not None:
            try:
                self.metadata.record(component, inputs, output, state, seconds, key, params, replaced=rebuilt,
                                     digest=_digest(final / RECORD))
            except MetadataError as exc:  # the output stands (a pushed version serves): say so
                raise MetadataError(f"{exc}; {component.name}'s output {output.uri} was committed but not "
                                    "recorded: the next run records it") from None
        if component.name == self.stop:
            raise StopRun(component.name)
        return output

    def _cached_or_executed(self, component, inputs, params, key: str, final: Path, start: float):
        """The cached output in `final` if usable, else the component's new output committed there."""
        output, rebuilt = (None, None) if self.forced(component.name) else self.cached(final)
        if output is not None:  # a kill between the commit and its clean-up left the resume state behind
            shutil.rmtree(final.with_name(f".{final.name}.work"), ignore_errors=True)
            return output, rebuilt, "cached"
        if component.name in self.upstream:
            raise PipelineError(f"--from {self.start}: {component.name} comes before it and has no cached "
                                f"output for these inputs and settings ({rebuilt or 'never run'}); "
                                "run without --from first")
        if rebuilt:
            log.info("%-10s cached output %s %s: rebuilding", component.name, final, rebuilt)
            if self.metadata is not None:  # before its files are replaced: no LIVE record of missing files
                self.metadata.forget(self._recorded_uri(final))
        try:
            output = self._execute(component, inputs, params, key, final)
        except BaseException as exc:
            if self.metadata is not None:
                self.metadata.record(component, inputs, None, "failed", time.monotonic() - start, key, params,
                                     error=first_line(exc))
            raise
        return output, rebuilt, "executed"

    def reuse(self, component: Component, output: Artifact) -> Artifact:
        """Records an earlier run's output as this run's, e.g. hyperparameters found on other data."""
        self.records[component.name] = {"state": "cached", "seconds": 0.0, "uri": output.uri, "reused": True}
        self.outputs[component.name] = output
        log.info("%-10s %-8s %7.1fs  (reused %s)", component.name, "cached", 0.0, output.uri)
        if self.metadata is not None:
            self.metadata.record(component, (), output, "cached", 0.0, output.fingerprint, {},
                                 digest=_digest(Path(output.uri) / RECORD))
        if component.name == self.stop:
            raise StopRun(component.name)
        return output

    @staticmethod
    def _recorded_uri(final: Path) -> str:
        """The uri a committed output's record names (a push's is its serving version), else `final`."""
        try:
            return artifacts.record_uri(json.loads((final / RECORD).read_text()), final)
        except (OSError, ValueError, KeyError):
            return str(final)

    @staticmethod
    def cached(final: Path) -> tuple[Artifact | None, str | None]:
        """The cached output in `final`, or None and why it cannot be used (None when there is none)."""
        if not (final / RECORD).is_file():
            return None, None
        try:
            record = json.loads((final / RECORD).read_text())
            output = artifacts.load(final)
        except (ValueError, KeyError, TypeError):
            return None, "has an unreadable record"  # rebuilt, never trusted
        if not output.intact():
            return None, f"lost its files ({output.uri})"
        if FILES not in record:
            return None, "has no list of its files (written by an older version)"
        problem = altered(Path(output.uri), record[FILES])
        return (None, f"was altered: {problem}") if problem else (output, None)

    def _execute(self, component, inputs, params, key: str, final: Path) -> Artifact:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(final.parent, f".{final.name}.tmp-*")
        remove_leftovers(final.parent, f".{final.name}.stale-*")
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        accepted = inspect.signature(component.fn).parameters
        work = final.with_name(f".{final.name}.work")
        extra = {}
        if "work_dir" in accepted:
            work.mkdir(exist_ok=True)
            extra["work_dir"] = work
        if "run_dir" in accepted:
            extra["run_dir"] = self.run_dir
        if "deadline" in accepted:
            extra["deadline"] = self.deadline
        try:
            failpoint(f"{component.name}.start")
            output = component.fn(*inputs, out_dir=tmp, **params, **extra)
            content = Path(output.uri)  # the output directory, or where it put its files (a serving version)
            if output.uri == str(tmp):
                output = output.relocated(str(final))
            files = manifest(content)
            if not output.fingerprint:  # what was computed and what came out: a retrained model differs
                blob = json.dumps([key, files], sort_keys=True).encode()
                output = dataclasses.replace(output, fingerprint=hashlib.sha256(blob).hexdigest())
            record = {**output.to_dict(), FILES: files}
            # Moves with the root: named from the record's place, textually on both sides as `artifacts.load`
            # joins it back, so a symlink inside the root (artifacts/ on another disk) is never resolved.
            if paths.under(output.uri, self.root) is not None:
                record |= {"uri": os.path.relpath(os.path.abspath(output.uri), os.path.abspath(final)), RELATIVE: True}
            (tmp / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))
            failpoint(f"{component.name}.commit")
            if final.exists():  # stale or altered: move aside so the rename below is atomic
                stale = final.with_name(f".{final.name}.stale-{os.getpid()}")
                os.rename(final, stale)
                shutil.rmtree(stale, ignore_errors=True)
            os.rename(tmp, final)
            failpoint(f"{component.name}.committed")
            shutil.rmtree(work, ignore_errors=True)  # committed: nothing left to resume
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return output
