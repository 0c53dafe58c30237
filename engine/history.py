"""Questions about earlier runs, answered by ML Metadata queries: a store shared by several machines gives each the same answers."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from engine.artifacts import ARTIFACT_TYPES, RECORD, Artifact, HyperParameters, Statistics
from engine.metadata import Metadata, live_of_type
from engine.runner import Runner

PASSED_VALIDATION = ("pushed", "not_blessed")
FINISHED = ("executed", "cached")


def _validated(store: Metadata, root: str):
    """The finished executions of each run of the pipeline at `root` that passed validation, newest first."""
    for run in reversed(store.runs(root, outputs=True)):
        done = {c: e for c, e in run["executions"].items() if e["state"] in FINISHED}
        if run["status"] in PASSED_VALIDATION or (run["status"] == "partial" and "validate" in done):
            yield done


def previous_span_statistics(store: Metadata, root: str, fingerprint: str) -> Statistics | None:
    """Statistics of the newest span before this one: the newest run of the pipeline at `root` over other
    data (another Examples fingerprint) that passed validation, whose statistics are still intact.

    Example:
        >>> previous_span_statistics(Metadata.open(cfg), cfg.root, examples.fingerprint).path("train")
        'pipeline_root/artifacts/statistics/5d1c.../train/FeatureStats.pb'
    """
    for done in _validated(store, root):
        examples, stats = (done.get(c, {}).get("output") for c in ("ingest", "statistics"))
        if not (examples and stats):
            continue
        if examples["properties"].get("fingerprint") in (None, fingerprint):
            continue
        found, _ = Runner.cached(Path(stats["uri"]))  # an altered or deleted output is never compared with
        if isinstance(found, Statistics):
            return found
    return None


def root_schema(store: Metadata, root: str) -> Path | None:
    """The curated or given schema file the newest validated run of the pipeline at `root` used, if it is
    still there: a root is one pipeline, so its next spans keep that schema (an inferred one is not kept).

    Example:
        >>> root_schema(Metadata.open(cfg), cfg.root)
        PosixPath('schemas/fashion_mnist.pbtxt')
    """
    for done in _validated(store, root):
        source = ((done.get("schema") or {}).get("output") or {}).get("properties", {}).get("source", "")
        if source.startswith("curated:"):
            path = Path(source.removeprefix("curated:").split(" (")[0])
            return path if path.is_file() else None
    return None


def reusable_hyperparameters(store: Metadata, search: str) -> HyperParameters | None:
    """The newest search result in the store with the same schema, search space and settings (`search`,
    see `components.tune.search_key`), whose files are intact; from any pipeline sharing the store.

    Example:
        >>> reusable_hyperparameters(Metadata.open(cfg), tune.search_key(schema, cfg.tune, 128, 42)).values
        {'conv_blocks': 2, ...}
    """
    for artifact in sorted(live_of_type(store, "HyperParameters"), key=lambda a: a["id"], reverse=True):
        if artifact["properties"].get("search") != search:
            continue
        found, _ = Runner.cached(Path(artifact["uri"]))
        if isinstance(found, HyperParameters) and found.search == search:
            return found
    return None


def recorded(described: dict[str, Any]) -> Artifact | None:
    """The artifact an execution recorded (as `Metadata` describes it), when its files are still as written.

    An output of the runner is read from its own record, whose file list is checked; one that lives
    elsewhere (a pushed version in the serving directory) is rebuilt from the store's properties.
    """
    uri = Path(described["uri"])
    if (uri / RECORD).is_file():
        found, _ = Runner.cached(uri)
        return found
    cls = ARTIFACT_TYPES.get(described["type"])
    if cls is None:
        return None
    props = described["properties"]
    values = {f.name: props.get(f.name, None if f.default is dataclasses.MISSING else f.default)
              for f in dataclasses.fields(cls) if f.name != "uri"}
    artifact = cls.from_dict({**values, "uri": str(uri)})
    return artifact if artifact.intact() else None


def run_outputs(store: Metadata, run_id: str) -> dict[str, tuple[Artifact, dict[str, Any]]]:
    """The outputs the run `run_id` has so far, by component, with their execution (state, seconds):
    what a step of that run, on any machine sharing the store, takes as its inputs.

    Raises:
        MetadataError: no run has this id.

    Example:
        >>> run_outputs(Metadata.open(cfg), "kfp-1f2e")["ingest"][0].counts
        {'train': 54000, 'eval': 6000, 'test': 10000}
    """
    found = {}
    for execution in store.run(run_id)["executions"]:
        if execution["state"] in FINISHED and execution["output"]:
            artifact = recorded(execution["output"])
            if artifact is not None:
                found[execution["component"]] = (artifact, execution)
    return found
