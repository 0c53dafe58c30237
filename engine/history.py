"""Questions about earlier runs, answered by ML Metadata queries: a store shared by several machines gives each the
same answers. The queries are generic, by node name, run status and artifact kind; the components ask their own
questions with them (a previous span's statistics, a root's schema, a reusable search)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator

from engine.artifacts import ARTIFACT_TYPES, RECORD, Artifact
from engine.metadata import Metadata, live_of_type
from engine.runner import Runner

FINISHED = ("executed", "cached")
PARTIAL = "partial"  # the status of a run that `--to` ended early


def finished_runs(metadata: Metadata, root: str, statuses: tuple[str, ...],
                  through: str | None = None) -> Iterator[dict[str, dict[str, Any]]]:
    """The finished executions, by node, of each run of the pipeline at `root` that ended in one of `statuses`
    (or ended early, `partial`, after finishing the node `through`), newest first.
    """
    for run in reversed(metadata.runs(root, outputs=True)):
        done = {c: e for c, e in run["executions"].items() if e["state"] in FINISHED}
        if run["status"] in statuses or (through is not None and run["status"] == PARTIAL and through in done):
            yield done


def newest_live(metadata: Metadata, kind: str, **where: Any) -> Artifact | None:
    """The newest LIVE artifact of `kind` in the store (from any pipeline sharing it) whose properties equal
    `where`, in the store and in its own record, and whose files are intact.
    """
    for artifact in sorted(live_of_type(metadata, kind), key=lambda a: a["id"], reverse=True):
        if any(artifact["properties"].get(name) != value for name, value in where.items()):
            continue
        found, _ = Runner.cached(Path(artifact["uri"]))
        if found is not None and found.kind == kind and all(getattr(found, n) == v for n, v in where.items()):
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


def run_outputs(metadata: Metadata, run_id: str) -> dict[str, tuple[Artifact, dict[str, Any]]]:
    """The outputs the run `run_id` has so far, by component, with their execution (state, seconds):
    what a step of that run, on any machine sharing the store, takes as its inputs.

    Raises:
        MetadataError: no run has this id.
    """
    found = {}
    for execution in metadata.run(run_id)["executions"]:
        if execution["state"] in FINISHED and execution["output"]:
            artifact = recorded(execution["output"])
            if artifact is not None:
                found[execution["component"]] = (artifact, execution)
    return found
