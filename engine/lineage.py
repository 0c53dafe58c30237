"""The lineage of a pushed model version: one ML Metadata query for the graph upstream of it, walked back."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from engine.errors import MetadataError
from engine.metadata import Metadata
from engine.mlmd import get_property, proto

LINEAGE_HOPS = 24  # pushed model back to ingest is 11 hops (artifact, execution, ...), evaluation's path included


def lineage(store: Metadata, version_uri: str | Path) -> dict[str, Any]:
    """What produced a pushed model version: the run, data, schema, statistics, hyperparameters and model.

    One ML Metadata lineage query fetches the graph upstream of the artifact recorded at `version_uri`; it
    is walked back nearest first, stopping at the baseline it was compared with (an input of its own kind).
    Each artifact found is keyed by its kind in lower case (the version's own in snake case), each
    execution by its component, `<component>_run`.

    Raises:
        MetadataError: no pushed model was recorded at that directory.
    """
    pb = proto()
    uri = str(Path(version_uri))
    # Recorded under the root by its id; older versions recorded paths as given (relative or absolute).
    spellings = dict.fromkeys([store.stored(uri), uri, str(Path(uri).resolve()), os.path.relpath(Path(uri).resolve())])
    # The version's artifact: the one recorded at that directory (which outside the artifacts directory only a
    # version, as it was pushed or as a baseline compared with, is).
    pushed = [a for spelling in spellings for a in store.mlmd.get_artifacts_by_uri(spelling)
              if a.state == pb.Artifact.LIVE]
    if not pushed:
        raise MetadataError(f"{uri}: no pushed model recorded at this directory in {store.name}")
    start = store.describe(pushed[-1])
    kind = start["type"]
    found: dict[str, dict[str, Any]] = {_snake(kind): start}
    graph = store.mlmd.get_lineage_subgraph(pb.LineageSubgraphQueryOptions(  # one query for the whole graph
        starting_artifacts=pb.LineageSubgraphQueryOptions.StartingNodes(filter_query=f"id = {pushed[-1].id}"),
        max_num_hops=LINEAGE_HOPS, direction=pb.LineageSubgraphQueryOptions.UPSTREAM))
    artifacts = {a.id: a for a in graph.artifacts}
    executions = {e.id: e for e in graph.executions}
    components = {t.id: t.name for t in graph.execution_types}
    writers: dict[int, list] = {}  # artifact id: the executions that output it, oldest first
    readers: dict[int, list[int]] = {}  # execution id: its input artifacts
    for event in sorted(graph.events, key=lambda e: e.execution_id):
        if event.type == pb.Event.OUTPUT and event.execution_id in executions:
            writers.setdefault(event.artifact_id, []).append(executions[event.execution_id])
        elif event.type == pb.Event.INPUT and event.artifact_id in artifacts:
            readers.setdefault(event.execution_id, []).append(event.artifact_id)
    frontier, seen, run_id = [pushed[-1].id], set(), None
    while frontier:
        following = []
        for artifact_id in frontier:
            candidates = writers.get(artifact_id, [])
            # The execution that wrote it (a cached execution only re-used it).
            complete = [e for e in candidates if e.last_known_state == pb.Execution.COMPLETE]
            execution = (complete or candidates or [None])[0]
            if execution is None or execution.id in seen:
                continue
            seen.add(execution.id)
            run = {"run_id": get_property(execution.properties, "run_id"),
                   "state": get_property(execution.properties, "state")}
            found.setdefault(f"{components[execution.type_id]}_run", run)
            if artifact_id == pushed[-1].id:  # the run that made the version
                run_id = run["run_id"]
            for input_id in readers.get(execution.id, []):
                described = store.describe(artifacts[input_id])
                # An input of the version's own kind is the version it was compared with.
                key = "baseline" if described["type"] == kind else described["type"].lower()
                if key not in found:
                    found[key] = described
                    if key != "baseline":  # the serving model compared with has a lineage of its own
                        following.append(input_id)
        frontier = following
    return {"version": start["properties"].get("version"), "uri": uri, "run_id": run_id, **found}


def _snake(kind: str) -> str:
    """A kind in snake case: `ModelCard` → `model_card`."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()
