"""A component's spec: the function that does its work and its typed inputs and output."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from engine.artifacts import Artifact


@dataclass(frozen=True)
class Component:
    """A component's declaration: its function and its typed inputs and output.

    `fn(*inputs, out_dir=..., **params)` writes its files into `out_dir` and returns the output
    artifact with `uri=out_dir`; a blank fingerprint is filled with a hash of the execution's cache key
    and the files written, so a rebuilt output that differs invalidates what was computed from it.
    `source_key(**params)` fingerprints inputs from outside the pipeline (ingest's data files).
    A function that takes `work_dir` gets a directory that survives a crash, so a killed execution can
    resume from it (training's epoch backups, a search's finished trials); it is deleted once the output
    is committed. One that takes `run_dir` gets this run's directory, for logs (TensorBoard); one that takes
    `deadline` gets the time (`time.time()` seconds) at which the run's budget ends, or None. None of the
    three is part of the cache key.
    Bump `version` when a change to the code changes what the component produces.
    """

    name: str
    fn: Callable[..., Artifact]
    inputs: tuple[type | tuple[type, ...], ...]
    output: type
    version: str = "1"
    source_key: Callable[..., str] | None = None
