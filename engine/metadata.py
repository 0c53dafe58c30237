"""The ML Metadata store of a root: artifacts, executions, events and contexts (pipeline, run) of every run."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

from engine import artifacts, paths
from engine.errors import MetadataError
from engine.lock import exclusive
from engine.metadata_queries import PIPELINE, RUN, RUN_PROPERTIES, RunQueries
from engine.mlmd import (Store, cannot_grow, connection_config, get_property, now, property_type, proto, reason,
                         set_property)

EXECUTION_STATES = {"executed": "COMPLETE", "cached": "CACHED", "failed": "FAILED"}


class Metadata(RunQueries):
    """One root's metadata store, opened for a run or for queries.
    """

    def __init__(self, conn, name: str, create: bool = True, root: str | Path | None = None):
        from ml_metadata.metadata_store import metadata_store

        self.name = name
        self.sqlite = Path(conn.sqlite.filename_uri) if conn.HasField("sqlite") else None
        if not create and conn.HasField("sqlite") and not Path(conn.sqlite.filename_uri).is_file():
            raise MetadataError(f"{name}: no metadata store: no run was recorded under this root")
        try:
            if conn.HasField("sqlite"):
                Path(conn.sqlite.filename_uri).parent.mkdir(parents=True, exist_ok=True)
            # Members of a distributed search open a new root's store at once; MLMD fails on a half-made one.
            sqlite = Path(conn.sqlite.filename_uri).parent if conn.HasField("sqlite") else None
            with exclusive(sqlite, create=False) if sqlite else contextlib.nullcontext():
                self.mlmd = Store(lambda: metadata_store.MetadataStore(conn, enable_upgrade_migration=True), name,
                                  self.sqlite)
                self.mlmd.get_context_types()
        except Exception as exc:  # MLMD raises its own errors types, or sqlite's, for an unreadable file
            why = getattr(exc, "reason", None) or reason(exc)
            # A new store on a full disk fails creating its tables: then nothing is wrong with it to move aside.
            raise MetadataError(cannot_grow(name, why, self.sqlite) or (
                f"{name}: cannot open the metadata store ({why}); move it aside to start a new one (cached "
                "artifacts are re-registered on the next run)")) from None
        self.types: dict[str, int] = {}
        self.ids: dict[tuple[str, str], int] = {}  # (type, uri) → id of the artifacts of this run
        self.kinds: dict[int, str] = {}  # artifact type id → name
        self.run_context = self.pipeline_context = None
        # Uris under the root are recorded relative to it, by its id: the root can move (see `paths`).
        self.root, self.root_id = root, paths.root_id(root) if root else None
        self.locations: dict[str, str | None] = {}  # another root's id: where it last ran

    @classmethod
    def open(cls, cfg, create: bool = True) -> "Metadata":
        """Opens (or creates) the store the config names. Raises MetadataError if it cannot be read."""
        return cls(*connection_config(cfg), create=create, root=cfg.root)

    # -- recording ---------------------------------------------------------------------------------------------
    def _artifact_type(self, kind: str) -> int:
        if kind not in self.types:
            pb, cls = proto(), artifacts.ARTIFACT_TYPES[kind]
            hints = typing.get_type_hints(cls)
            t = pb.ArtifactType(name=kind)
            for f in dataclasses.fields(cls):
                if f.name != "uri":
                    t.properties[f.name] = property_type(hints[f.name])
            t.properties["digest"] = pb.STRING
            t.properties["span"] = pb.INT
            self.types[kind] = self.mlmd.put_artifact_type(t, can_add_fields=True)
        return self.types[kind]

    def _execution_type(self, name: str) -> int:
        key = f"execution:{name}"
        if key not in self.types:
            pb = proto()
            t = pb.ExecutionType(name=name)
            for prop in ("state", "cache_key", "params", "version", "error", "rebuilt", "run_id"):
                t.properties[prop] = pb.STRING
            t.properties["seconds"] = pb.DOUBLE
            self.types[key] = self.mlmd.put_execution_type(t, can_add_fields=True)
        return self.types[key]

    def _context(self, type_name: str, name: str, properties: dict[str, Any]):
        pb = proto()
        key = f"context:{type_name}"
        if key not in self.types:
            t = pb.ContextType(name=type_name)
            for prop in (*RUN_PROPERTIES, "run_id"):
                t.properties[prop] = pb.STRING
            self.types[key] = self.mlmd.put_context_type(t, can_add_fields=True)
        found = self.mlmd.get_context_by_type_and_name(type_name, name)
        context = found or pb.Context(type_id=self.types[key], name=name)
        for prop, value in properties.items():
            set_property(context.properties, prop, value)
        [context.id] = self.mlmd.put_contexts([context])
        return context

    def start_run(self, run_id: str, root: str, config_text: str, dataset: str, alone: bool = True) -> None:
        """Creates the run's context, a child of the pipeline's (named after the root's id, `paths.root_id`),
        or joins it when a step of the same run created it before (on this machine or another sharing the store).

        `alone` (this run holds the root's lock exclusively): earlier runs still marked `running` ended
        as their summary says (the store failed to take their end), else were killed: `interrupted`.
        """
        pb = proto()
        self.root, self.root_id = root, paths.root_id(root, create=True)
        known = self.mlmd.get_context_by_type_and_name(PIPELINE, self.root_id)
        own = self.sqlite is not None and paths.under(self.sqlite, root) is not None  # copied with the root
        if known is not None and not own and paths.copied_from(root, get_property(known.properties, "root")):
            # A copy sharing this store with its original: were it to keep the id, the two roots would read
            # each other's runs and name each other's files.
            self.root_id = paths.renew_id(root)
        if alone:
            for context in self._runs(root):
                if get_property(context.properties, "status") == "running":
                    self._reconcile_run(context, Path(root) / "runs" / context.name / "summary.json")
        legacy = self.mlmd.get_context_by_type_and_name(PIPELINE, str(Path(root).resolve()))
        if legacy is not None and self.mlmd.get_context_by_type_and_name(PIPELINE, self.root_id) is None:
            legacy.name = self.root_id  # named after its path by an older version: now after its id
            self.mlmd.put_contexts([legacy])
        self.pipeline_context = self._context(PIPELINE, self.root_id, {"root": str(Path(root).resolve())})
        joined = self.mlmd.get_context_by_type_and_name(RUN, run_id) is not None  # a later step of the run
        self.run_context = self._context(RUN, run_id, {} if joined else {
            "run_id": run_id, "status": "running", "started": now(), "config": config_text, "dataset": dataset,
            "root": root})
        if not joined:
            self.mlmd.put_parent_contexts([pb.ParentContext(child_id=self.run_context.id,
                                                             parent_id=self.pipeline_context.id)])

    def _reconcile_run(self, context, summary_path: Path) -> None:
        """A run the store still says is running, while none is: it ended as its summary says (the store
        failed to take its end), or it was killed before writing one."""
        try:
            summary = json.loads(summary_path.read_text())
            status, error = str(summary["status"]), summary.get("error")
        except (OSError, ValueError, KeyError, TypeError):
            status, error = "interrupted", None
        if status == "running":
            status = "interrupted"
        set_property(context.properties, "status", status)
        set_property(context.properties, "error", error)
        self.mlmd.put_contexts([context])

    @contextlib.contextmanager
    def in_run(self, run_id: str):
        """Records made in the block go to the earlier run `run_id` (whose own record of them failed).

        Raises:
            MetadataError: the store has no such run.
        """
        context = self.mlmd.get_context_by_type_and_name(RUN, run_id)
        if context is None:
            raise MetadataError(f"{self.name}: no run {run_id} to record into")
        current, self.run_context = self.run_context, context
        try:
            yield
        finally:
            self.run_context = current

    def finish_run(self, status: str, error: str | None, report: str | None = None) -> None:
        """Sets the run's status: its final one, or `running` again after a step of it was retried."""
        self.run_context = self._context(RUN, self.run_context.name, {
            "status": status, "error": error or "", "report": report and self.stored(report),
            **({"finished": now()} if status != "running" else {})})

    def _artifact(self, artifact: artifacts.Artifact, digest: str | None, producing: bool):
        """The store's artifact for `artifact`.

        One being read (an input, a cached output) is the LIVE artifact at its uri. One just written is
        the same record only when its fingerprint and digest match; otherwise it is a new record, and the
        LIVE ones at that uri, whose files it replaced, become DELETED.
        """
        pb = proto()
        type_id, uri = self._artifact_type(artifact.kind), self.stored(artifact.uri)
        if (artifact.kind, uri) in self.ids and not producing:
            return self.mlmd.get_artifacts_by_id([self.ids[(artifact.kind, uri)]])[0]
        same_uri = [a for a in self.mlmd.get_artifacts_by_uri(uri) if a.type_id == type_id]
        live = [a for a in same_uri if a.state == pb.Artifact.LIVE]
        if live and not producing:
            return live[-1]
        for candidate in reversed(same_uri):
            same = get_property(candidate.properties, "fingerprint") == artifact.fingerprint
            if (candidate.state == pb.Artifact.LIVE and same
                    and (digest is None or get_property(candidate.properties, "digest") in (digest, None))):
                return candidate
        if producing:
            self.forget(uri)
        new = pb.Artifact(type_id=type_id, uri=uri, state=pb.Artifact.LIVE)
        for f in dataclasses.fields(artifact):
            if f.name != "uri":
                set_property(new.properties, f.name, getattr(artifact, f.name))
        set_property(new.properties, "digest", digest)
        if artifact.span_of:
            set_property(new.properties, "span", self._span(artifact, type_id))
        return new

    def forget(self, uri: str) -> None:
        """Marks the LIVE artifacts at `uri` DELETED: their files are about to be replaced, or are gone."""
        pb = proto()
        live = [a for a in self.mlmd.get_artifacts_by_uri(self.stored(uri)) if a.state == pb.Artifact.LIVE]
        for artifact in live:
            artifact.state = pb.Artifact.DELETED
        if live:
            self.mlmd.put_artifacts(live)

    def _span(self, artifact: artifacts.Artifact, type_id: int) -> int:
        """Spans count the distinct data (fingerprints) of one source (the kind's `span_of` property, e.g. a
        dataset spec) under this store, in order of arrival."""
        source = artifact.span_of
        seen = {get_property(a.properties, "fingerprint") for a in self.mlmd.get_artifacts_by_type(artifact.kind)
                if a.type_id == type_id and get_property(a.properties, source) == getattr(artifact, source)}
        return len(seen - {artifact.fingerprint}) + 1

    def record(self, component, inputs, output, state: str, seconds: float, key: str, params: dict,
               digest: str | None = None, error: str | None = None, replaced: str | None = None) -> None:
        """Records one execution of `component` in this run with its input and output events."""
        pb = proto()
        name, attempt = f"{self.run_context.name}:{component.name}", 1
        while self.mlmd.get_execution_by_type_and_name(component.name, name) is not None:
            attempt += 1  # a retried step of the same run: names are unique per execution type
            name = f"{self.run_context.name}:{component.name}#{attempt}"
        execution = pb.Execution(type_id=self._execution_type(component.name), name=name,
                                 last_known_state=getattr(pb.Execution, EXECUTION_STATES[state]))
        for prop, value in (("state", state), ("seconds", float(seconds)), ("cache_key", key),
                            ("params", json.dumps(params, sort_keys=True, default=str)),
                            ("version", component.version), ("error", error), ("rebuilt", replaced),
                            ("run_id", self.run_context.name)):
            set_property(execution.properties, prop, value)
        events = [(self._artifact(a, None, producing=False), pb.Event(type=pb.Event.INPUT))
                  for a in inputs if a is not None]
        if output is not None:
            events.append((self._artifact(output, digest, producing=state == "executed"),
                           pb.Event(type=pb.Event.OUTPUT)))
        _, ids, _ = self.mlmd.put_execution(execution, events, [self.pipeline_context, self.run_context])
        kinds = {type_id: kind for kind, type_id in self.types.items()}
        for (artifact, _), artifact_id in zip(events, ids):
            self.ids[(kinds[artifact.type_id], artifact.uri)] = artifact_id

    def stored(self, uri: str | Path) -> str:
        """How the store records `uri`: by the root's id and the path under it, else absolute (`paths.to_stored`)."""
        if not self.root:
            return str(uri)
        stored = paths.to_stored(uri, self.root, self.root_id)
        for other, where in self.locations.items():  # another root's output (a reused search), found through it
            if where and not stored.startswith(paths.SCHEME) and paths.under(uri, where) is not None:
                return paths.to_stored(uri, where, other)
        return stored

    def resolve(self, stored: str) -> str:
        """The path a recorded uri names now: under this root wherever it is, or where another root last ran."""
        return paths.resolve(stored, self.root, self.root_id, self._location)

    def _location(self, root_id: str) -> str | None:
        if root_id not in self.locations:
            context = self.mlmd.get_context_by_type_and_name(PIPELINE, root_id)
            self.locations[root_id] = context and get_property(context.properties, "root")
        return self.locations[root_id]


def live_of_type(store: Metadata, kind: str) -> list[dict[str, Any]]:
    """The store's LIVE artifacts of one kind, described, oldest first.
    """
    pb = proto()
    found = [a for a in store.mlmd.get_artifacts_by_type(kind) if a.state == pb.Artifact.LIVE]
    return [store.describe(a) for a in sorted(found, key=lambda a: a.id)]
