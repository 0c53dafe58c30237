"""The lineage of a pushed model version: one ML Metadata query for the graph upstream of it, walked back."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engine.errors import MetadataError
from engine.metadata import Metadata, _get, _pb

LINEAGE_HOPS = 24  # pushed model back to ingest is 11 hops (artifact, execution, ...), evaluation's path included


def lineage(store: Metadata, version_uri: str | Path) -> dict[str, Any]:
    """What produced a pushed model version: the run, data, schema, statistics, hyperparameters and model.

    One ML Metadata lineage query fetches the graph upstream of the PushedModel artifact at
    `version_uri`; it is walked back nearest first, stopping at the baseline it was compared with.

    Raises:
        MetadataError: no pushed model was recorded at that directory.

    Example:
        >>> lineage(Metadata.open(cfg, create=False), "pipeline_root/serving/3")["examples"]["fingerprint"]
        '5d1c...'
    """
    pb = _pb()
    uri = str(Path(version_uri))
    # Recorded under the root by its id; older versions recorded paths as given (relative or absolute).
    spellings = dict.fromkeys([store.stored(uri), uri, str(Path(uri).resolve()), os.path.relpath(Path(uri).resolve())])
    pushed = [a for spelling in spellings for a in store.store.get_artifacts_by_uri(spelling)
              if a.state == pb.Artifact.LIVE
              and store.store.get_artifact_types_by_id([a.type_id])[0].name == "PushedModel"]
    if not pushed:
        raise MetadataError(f"{uri}: no pushed model recorded at this directory in {store.name}")
    found: dict[str, dict[str, Any]] = {"pushed_model": store._describe(pushed[-1])}
    graph = store.store.get_lineage_subgraph(pb.LineageSubgraphQueryOptions(  # one query for the whole graph
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
    frontier, seen = [pushed[-1].id], set()
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
            found.setdefault(f"{components[execution.type_id]}_run", {
                "run_id": _get(execution.properties, "run_id"), "state": _get(execution.properties, "state")})
            for input_id in readers.get(execution.id, []):
                described = store._describe(artifacts[input_id])
                key = {"PushedModel": "baseline"}.get(described["type"], described["type"].lower())
                if key not in found:
                    found[key] = described
                    if key != "baseline":  # the serving model compared with has a lineage of its own
                        following.append(input_id)
        frontier = following
    return {"version": found["pushed_model"]["properties"].get("version"), "uri": uri,
            "run_id": found.get("push_run", {}).get("run_id"), **found}
