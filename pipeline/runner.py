"""Runs components with caching: an output is reused when its inputs, parameters and code version match."""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline import artifacts
from pipeline.artifacts import RECORD, Artifact

log = logging.getLogger("pipeline")


@dataclass(frozen=True)
class Component:
    """A component's declaration: its function and its typed inputs and output.

    `fn(*inputs, out_dir=..., **params)` writes its files into `out_dir` and returns the output
    artifact with `uri=out_dir`; a blank fingerprint is filled with the execution's cache key.
    `source_key(**params)` fingerprints inputs from outside the pipeline (ingest's data files).
    A function that takes `work_dir` gets a directory that survives a crash, so a killed execution can
    resume from it (training's epoch backups, a search's finished trials); it is deleted once the output
    is committed. One that takes `run_dir` gets this run's directory, for logs (TensorBoard); neither is
    part of the cache key.
    Bump `version` when a change to the code changes what the component produces.
    """

    name: str
    fn: Callable[..., Artifact]
    inputs: tuple[type | tuple[type, ...], ...]
    output: type
    version: str = "1"
    source_key: Callable[..., str] | None = None


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"parameter of type {type(value).__name__} cannot be fingerprinted")


class Runner:
    """Executes components for one run, reusing cached outputs under `<root>/artifacts`.

    Example:
        >>> run = Runner(root="/tmp/root")
        >>> examples = run(ingest.COMPONENT, data=cfg.data)
        >>> run.components["ingest"]["state"]
        'executed'
    """

    def __init__(self, root: str | Path, use_cache: bool = True, force: frozenset[str] = frozenset(),
                 run_dir: str | Path | None = None):
        self.store = Path(root) / "artifacts"
        self.run_dir = Path(run_dir) if run_dir else None
        self.use_cache = use_cache
        self.force = force  # components executed even when cached (e.g. tune with --retune)
        self.components: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, Artifact] = {}

    def cache_key(self, component: Component, inputs: tuple[Artifact, ...], params: dict) -> str:
        identity = {
            "component": component.name,
            "version": component.version,
            "inputs": [a.fingerprint if a is not None else None for a in inputs],
            "params": params,
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
        final = self.store / component.name / key[:16]
        output = self._cached(final) if self.use_cache and component.name not in self.force else None
        state = "cached"
        if output is None:
            output = self._execute(component, inputs, params, key, final)
            state = "executed"
        seconds = round(time.monotonic() - start, 2)
        self.components[component.name] = {"state": state, "seconds": seconds, "uri": output.uri}
        self.outputs[component.name] = output
        log.info("%-10s %-8s %7.1fs", component.name, state, seconds)
        return output

    def reuse(self, component: Component, output: Artifact) -> Artifact:
        """Records an earlier run's output as this run's, e.g. hyperparameters found on other data."""
        self.components[component.name] = {"state": "cached", "seconds": 0.0, "uri": output.uri, "reused": True}
        self.outputs[component.name] = output
        log.info("%-10s %-8s %7.1fs  (reused %s)", component.name, "cached", 0.0, output.uri)
        return output

    @staticmethod
    def _cached(final: Path) -> Artifact | None:
        if not (final / RECORD).is_file():
            return None
        try:
            output = artifacts.load(final)
        except (ValueError, KeyError, TypeError):
            return None  # an unreadable record is rebuilt, never trusted
        return output if output.intact() else None

    def _execute(self, component, inputs, params, key: str, final: Path) -> Artifact:
        final.parent.mkdir(parents=True, exist_ok=True)
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
        try:
            output = component.fn(*inputs, out_dir=tmp, **params, **extra)
            if output.uri == str(tmp):
                output = output.relocated(str(final))
            if not output.fingerprint:
                output = dataclasses.replace(output, fingerprint=key)
            (tmp / RECORD).write_text(json.dumps(output.to_dict(), indent=2, sort_keys=True))
            if final.exists():  # stale or uncached: move aside so the rename below is atomic
                stale = final.with_name(f".{final.name}.stale-{os.getpid()}")
                os.rename(final, stale)
                shutil.rmtree(stale, ignore_errors=True)
            os.rename(tmp, final)
            shutil.rmtree(work, ignore_errors=True)  # committed: nothing left to resume
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return output
