"""Queries of a root's metadata store: its runs, each run's executions and outputs, the LIVE artifacts."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine import paths
from engine.artifacts import ARTIFACT_TYPES
from engine.errors import MetadataError
from engine.mlmd import get_property, proto

PIPELINE, RUN = "pipeline", "pipeline_run"
RUN_PROPERTIES = ("status", "error", "started", "finished", "config", "dataset", "root", "report")


class RunQueries:
    """The queries of `engine.metadata.Metadata`: `mlmd` is its store, `resolve` turns a recorded uri into a path."""

    def _runs(self, root: str):
        rid = paths.root_id(root)  # a root's context is named after its id; an older store's after its path
        pipeline = (rid and self.mlmd.get_context_by_type_and_name(PIPELINE, rid)
                    or self.mlmd.get_context_by_type_and_name(PIPELINE, str(Path(root).resolve())))
        if pipeline is None:
            return []
        return sorted(self.mlmd.get_children_contexts_by_context(pipeline.id), key=lambda c: c.id)  # as started

    def runs(self, root: str, outputs: bool = False) -> list[dict[str, Any]]:
        """Every run of the pipeline at `root`, oldest first: id, status, times, dataset and component states,
        and the columns the artifact types declare (`Artifact.run_columns`, in order of their names: the
        property of the run's first output of that kind, else None); with `outputs`, also `executions`: each
        component's last execution in the run, with its output.
        """
        out = []
        for context in self._runs(root):
            row = {prop: get_property(context.properties, prop)
                   for prop in ("status", "error", "started", "finished", "dataset", "report")}
            row["report"] = row["report"] and self.resolve(row["report"])
            executions = self._executions(context)
            row["components"] = {e["component"]: e["state"] for e in executions}
            if outputs:
                row["executions"] = {e["component"]: e for e in executions}
            out.append({"run_id": context.name, **row, **_columns(executions)})
        return out

    def _executions(self, context) -> list[dict[str, Any]]:
        pb = proto()
        executions = sorted(self.mlmd.get_executions_by_context(context.id), key=lambda e: e.id)
        events = self.mlmd.get_events_by_execution_ids([e.id for e in executions]) if executions else []
        outputs = {ev.execution_id: ev.artifact_id for ev in events if ev.type == pb.Event.OUTPUT}
        found = {a.id: a for a in self.mlmd.get_artifacts_by_id(list(outputs.values()))} if outputs else {}
        types = {t.id: t.name for t in self.mlmd.get_execution_types()}
        return [{"component": types[e.type_id], "state": get_property(e.properties, "state"),
                 "seconds": get_property(e.properties, "seconds"), "error": get_property(e.properties, "error"),
                 "rebuilt": get_property(e.properties, "rebuilt"),
                 "output": self.describe(found[outputs[e.id]]) if e.id in outputs else None}
                for e in executions]

    def describe(self, artifact) -> dict[str, Any]:
        """An MLMD artifact as a dict: id, type (its kind), uri (a path now), state and properties."""
        pb = proto()
        if artifact.type_id not in self.kinds:  # one query per type, not per artifact described
            self.kinds[artifact.type_id] = self.mlmd.get_artifact_types_by_id([artifact.type_id])[0].name
        kind = self.kinds[artifact.type_id]
        props = {}
        for name in artifact.properties:
            value = get_property(artifact.properties, name)
            if isinstance(value, str) and value[:1] in "[{":
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            props[name] = value
        return {"id": artifact.id, "type": kind, "uri": self.resolve(artifact.uri),
                "state": pb.Artifact.State.Name(artifact.state), "properties": props}

    def has_run(self, run_id: str) -> bool:
        """Whether the store has a run of this id."""
        return self.mlmd.get_context_by_type_and_name(RUN, run_id) is not None

    def run(self, run_id: str) -> dict[str, Any]:
        """One run: its properties, effective config (YAML), every execution with its output artifact, and the
        columns `runs` shows (`Artifact.run_columns`: accuracy, pushed version).

        Raises:
            MetadataError: no run has this id.
        """
        context = self.mlmd.get_context_by_type_and_name(RUN, run_id)
        if context is None:
            raise MetadataError(f"{self.name}: no run '{run_id}' (see `python -m pipeline runs list`)")
        found = {p: get_property(context.properties, p) for p in RUN_PROPERTIES}
        executions = self._executions(context)
        return {"run_id": run_id, **found, "report": found["report"] and self.resolve(found["report"]),
                "executions": executions, **_columns(executions)}

    def lineage(self, version_uri: str | Path) -> dict[str, Any]:
        """What produced a pushed model version (see `engine.lineage.lineage`)."""
        from engine.lineage import lineage

        return lineage(self, version_uri)

    def live_artifacts(self) -> list[dict[str, Any]]:
        """Every artifact marked LIVE, described."""
        pb = proto()
        return [self.describe(a) for a in self.mlmd.get_artifacts() if a.state == pb.Artifact.LIVE]


def _columns(executions: list[dict[str, Any]]) -> dict[str, Any]:
    """The columns the artifact types declare (`Artifact.run_columns`, in order of their names): the property
    of the run's first output of that kind, else None."""
    row = {}
    for column, kind, prop in sorted((column, cls.kind, prop)
                                     for cls in ARTIFACT_TYPES.values() for column, prop in cls.run_columns):
        found = [e["output"] for e in executions if e["output"] and e["output"]["type"] == kind]
        row[column] = found[0]["properties"].get(prop) if found else None
    return row
