"""The ML Metadata store of a root: artifacts, executions, events and contexts (pipeline, run) of every run."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import typing
from pathlib import Path
from typing import Any

from engine import artifacts, paths
from engine.errors import MetadataError, first_line
from engine.lock import exclusive

PIPELINE, RUN = "pipeline", "pipeline_run"
EXECUTION_STATES = {"executed": "COMPLETE", "cached": "CACHED", "failed": "FAILED"}
RUN_PROPERTIES = ("status", "error", "started", "finished", "config", "dataset", "root", "report")


def _pb():
    from ml_metadata.proto import metadata_store_pb2

    return metadata_store_pb2


def connection_config(cfg) -> tuple[Any, str]:
    """The MLMD connection for a Config (SQLite `<root>/metadata.sqlite` unless `metadata.mysql`), and its name."""
    pb = _pb()
    conn = pb.ConnectionConfig()
    mysql = cfg.metadata.mysql
    if mysql is not None:
        conn.mysql.host, conn.mysql.port, conn.mysql.database = mysql.host, mysql.port, mysql.database
        conn.mysql.user, conn.mysql.password = mysql.user, mysql.secret
        return conn, f"mysql://{mysql.user}@{mysql.host}:{mysql.port}/{mysql.database}"
    path = Path(cfg.metadata.sqlite or Path(cfg.root) / "metadata.sqlite")
    conn.sqlite.filename_uri = str(path)
    conn.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    return conn, str(path)


class _Store:
    """An MLMD store whose failed call names its own cause, on a fresh connection for the calls after it.

    MLMD's SQLite source leaves a transaction open when its COMMIT fails (a full disk): every later
    call on that connection then says only "Transaction already open", hiding why.
    """

    def __init__(self, connect, name: str):
        self._connect, self._name = connect, name
        self._store = connect()

    def __getattr__(self, attr: str):
        method = getattr(self._store, attr)
        if not callable(method):
            return method

        def call(*args, **kwargs):
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                reason = first_line(exc)
                try:
                    self._store = self._connect()  # the failed transaction goes with the old connection
                except Exception:
                    pass  # the next call says why it cannot connect
                full = "disk" in reason.lower() or "full" in reason.lower()
                raise MetadataError(f"{self._name}: the metadata store failed ({reason})" + (
                    "; the disk may be full: free space and run again: finished components are reused"
                    if full else "")) from None

        return call


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _set(properties, name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        properties[name].bool_value = value
    elif isinstance(value, int):
        properties[name].int_value = value
    elif isinstance(value, float):
        properties[name].double_value = value
    elif isinstance(value, str):
        properties[name].string_value = value
    else:
        properties[name].string_value = json.dumps(value, sort_keys=True, default=str)


def _get(properties, name: str) -> Any:
    if name not in properties:
        return None
    value = properties[name]
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


def _property_type(hint) -> int:
    pb = _pb()
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType")):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return {bool: pb.BOOLEAN, int: pb.INT, float: pb.DOUBLE, str: pb.STRING}.get(hint, pb.STRING)


class Metadata:
    """One root's metadata store, opened for a run or for queries.

    Example:
        >>> store = Metadata.open(cfg)
        >>> store.start_run("20261128T101500-ab12", config_text)
        >>> store.record(ingest.COMPONENT, (), examples, "executed", 12.5, key, params, digest=digest)
        >>> store.finish_run("pushed", None)
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
                self.store = _Store(lambda: metadata_store.MetadataStore(conn, enable_upgrade_migration=True), name)
                self.store.get_context_types()
        except Exception as exc:  # MLMD raises its own errors types, or sqlite's, for an unreadable file
            first = first_line(exc)
            raise MetadataError(f"{name}: cannot open the metadata store ({first}); move it aside to start a "
                                f"new one (cached artifacts are re-registered on the next run)") from None
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
            pb, cls = _pb(), artifacts.ARTIFACT_TYPES[kind]
            hints = typing.get_type_hints(cls)
            t = pb.ArtifactType(name=kind)
            for f in dataclasses.fields(cls):
                if f.name != "uri":
                    t.properties[f.name] = _property_type(hints[f.name])
            t.properties["digest"] = pb.STRING
            t.properties["span"] = pb.INT
            self.types[kind] = self.store.put_artifact_type(t, can_add_fields=True)
        return self.types[kind]

    def _execution_type(self, name: str) -> int:
        key = f"execution:{name}"
        if key not in self.types:
            pb = _pb()
            t = pb.ExecutionType(name=name)
            for prop in ("state", "cache_key", "params", "version", "error", "rebuilt", "run_id"):
                t.properties[prop] = pb.STRING
            t.properties["seconds"] = pb.DOUBLE
            self.types[key] = self.store.put_execution_type(t, can_add_fields=True)
        return self.types[key]

    def _context(self, type_name: str, name: str, properties: dict[str, Any]):
        pb = _pb()
        key = f"context:{type_name}"
        if key not in self.types:
            t = pb.ContextType(name=type_name)
            for prop in (*RUN_PROPERTIES, "run_id"):
                t.properties[prop] = pb.STRING
            self.types[key] = self.store.put_context_type(t, can_add_fields=True)
        found = self.store.get_context_by_type_and_name(type_name, name)
        context = found or pb.Context(type_id=self.types[key], name=name)
        for prop, value in properties.items():
            _set(context.properties, prop, value)
        [context.id] = self.store.put_contexts([context])
        return context

    def start_run(self, run_id: str, root: str, config_text: str, dataset: str, alone: bool = True) -> None:
        """Creates the run's context, a child of the pipeline's (named after the root's id, `paths.root_id`),
        or joins it when a step of the same run created it before (on this machine or another sharing the store).

        `alone` (this run holds the root's lock exclusively): earlier runs still marked `running` ended
        as their summary says (the store failed to take their end), else were killed: `interrupted`.
        """
        pb = _pb()
        self.root, self.root_id = root, paths.root_id(root, create=True)
        known = self.store.get_context_by_type_and_name(PIPELINE, self.root_id)
        own = self.sqlite is not None and paths.under(self.sqlite, root) is not None  # copied with the root
        if known is not None and not own and paths.copied_from(root, _get(known.properties, "root")):
            # A copy sharing this store with its original: were it to keep the id, the two roots would read
            # each other's runs and name each other's files.
            self.root_id = paths.renew_id(root)
        if alone:
            for context in self._runs(root):
                if _get(context.properties, "status") == "running":
                    self._reconcile_run(context, Path(root) / "runs" / context.name / "summary.json")
        legacy = self.store.get_context_by_type_and_name(PIPELINE, str(Path(root).resolve()))
        if legacy is not None and self.store.get_context_by_type_and_name(PIPELINE, self.root_id) is None:
            legacy.name = self.root_id  # named after its path by an older version: now after its id
            self.store.put_contexts([legacy])
        self.pipeline_context = self._context(PIPELINE, self.root_id, {"root": str(Path(root).resolve())})
        joined = self.store.get_context_by_type_and_name(RUN, run_id) is not None  # a later step of the run
        self.run_context = self._context(RUN, run_id, {} if joined else {
            "run_id": run_id, "status": "running", "started": _now(), "config": config_text, "dataset": dataset,
            "root": root})
        if not joined:
            self.store.put_parent_contexts([pb.ParentContext(child_id=self.run_context.id,
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
        _set(context.properties, "status", status)
        _set(context.properties, "error", error)
        self.store.put_contexts([context])

    @contextlib.contextmanager
    def in_run(self, run_id: str):
        """Records made in the block go to the earlier run `run_id` (whose own record of them failed).

        Raises:
            MetadataError: the store has no such run.
        """
        context = self.store.get_context_by_type_and_name(RUN, run_id)
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
            **({"finished": _now()} if status != "running" else {})})

    def _artifact(self, artifact: artifacts.Artifact, digest: str | None, producing: bool):
        """The store's artifact for `artifact`.

        One being read (an input, a cached output) is the LIVE artifact at its uri. One just written is
        the same record only when its fingerprint and digest match; otherwise it is a new record, and the
        LIVE ones at that uri, whose files it replaced, become DELETED.
        """
        pb = _pb()
        type_id, uri = self._artifact_type(artifact.kind), self.stored(artifact.uri)
        if (artifact.kind, uri) in self.ids and not producing:
            return self.store.get_artifacts_by_id([self.ids[(artifact.kind, uri)]])[0]
        same_uri = [a for a in self.store.get_artifacts_by_uri(uri) if a.type_id == type_id]
        live = [a for a in same_uri if a.state == pb.Artifact.LIVE]
        if live and not producing:
            return live[-1]
        for candidate in reversed(same_uri):
            same = _get(candidate.properties, "fingerprint") == artifact.fingerprint
            if (candidate.state == pb.Artifact.LIVE and same
                    and (digest is None or _get(candidate.properties, "digest") in (digest, None))):
                return candidate
        if producing:
            self.forget(uri)
        new = pb.Artifact(type_id=type_id, uri=uri, state=pb.Artifact.LIVE)
        for f in dataclasses.fields(artifact):
            if f.name != "uri":
                _set(new.properties, f.name, getattr(artifact, f.name))
        _set(new.properties, "digest", digest)
        if isinstance(artifact, artifacts.Examples):
            _set(new.properties, "span", self._span(artifact, type_id))
        return new

    def forget(self, uri: str) -> None:
        """Marks the LIVE artifacts at `uri` DELETED: their files are about to be replaced, or are gone."""
        pb = _pb()
        live = [a for a in self.store.get_artifacts_by_uri(self.stored(uri)) if a.state == pb.Artifact.LIVE]
        for artifact in live:
            artifact.state = pb.Artifact.DELETED
        if live:
            self.store.put_artifacts(live)

    def _span(self, examples: artifacts.Examples, type_id: int) -> int:
        """Spans count distinct data of one dataset spec under this store, in order of arrival."""
        seen = {_get(a.properties, "fingerprint") for a in self.store.get_artifacts_by_type("Examples")
                if a.type_id == type_id and _get(a.properties, "spec") == examples.spec}
        return len(seen - {examples.fingerprint}) + 1

    def record(self, component, inputs, output, state: str, seconds: float, key: str, params: dict,
               digest: str | None = None, error: str | None = None, replaced: str | None = None) -> None:
        """Records one execution of `component` in this run with its input and output events."""
        pb = _pb()
        name, attempt = f"{self.run_context.name}:{component.name}", 1
        while self.store.get_execution_by_type_and_name(component.name, name) is not None:
            attempt += 1  # a retried step of the same run: names are unique per execution type
            name = f"{self.run_context.name}:{component.name}#{attempt}"
        execution = pb.Execution(type_id=self._execution_type(component.name), name=name,
                                 last_known_state=getattr(pb.Execution, EXECUTION_STATES[state]))
        for prop, value in (("state", state), ("seconds", float(seconds)), ("cache_key", key),
                            ("params", json.dumps(params, sort_keys=True, default=str)),
                            ("version", component.version), ("error", error), ("rebuilt", replaced),
                            ("run_id", self.run_context.name)):
            _set(execution.properties, prop, value)
        events = [(self._artifact(a, None, producing=False), pb.Event(type=pb.Event.INPUT))
                  for a in inputs if a is not None]
        if output is not None:
            events.append((self._artifact(output, digest, producing=state == "executed"),
                           pb.Event(type=pb.Event.OUTPUT)))
        _, ids, _ = self.store.put_execution(execution, events, [self.pipeline_context, self.run_context])
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
            context = self.store.get_context_by_type_and_name(PIPELINE, root_id)
            self.locations[root_id] = context and _get(context.properties, "root")
        return self.locations[root_id]

    # -- queries -----------------------------------------------------------------------------------------------
    def _runs(self, root: str):
        rid = paths.root_id(root)  # a root's context is named after its id; an older store's after its path
        pipeline = (rid and self.store.get_context_by_type_and_name(PIPELINE, rid)
                    or self.store.get_context_by_type_and_name(PIPELINE, str(Path(root).resolve())))
        if pipeline is None:
            return []
        return sorted(self.store.get_children_contexts_by_context(pipeline.id), key=lambda c: c.id)  # as started

    def runs(self, root: str, outputs: bool = False) -> list[dict[str, Any]]:
        """Every run of the pipeline at `root`, oldest first: id, status, times, dataset and component states;
        with `outputs`, also `executions`: each component's last execution in the run, with its output.

        Example:
            >>> Metadata.open(cfg, create=False).runs(cfg.root)[-1]["status"]
            'pushed'
        """
        out = []
        for context in self._runs(root):
            row = {prop: _get(context.properties, prop) for prop in ("status", "error", "started", "finished",
                                                                    "dataset", "report")}
            row["report"] = row["report"] and self.resolve(row["report"])
            executions = self._executions(context)
            row["components"] = {e["component"]: e["state"] for e in executions}
            if outputs:
                row["executions"] = {e["component"]: e for e in executions}
            pushed = [e["output"] for e in executions if e["component"] == "push" and e["output"]]
            evaluated = [e["output"] for e in executions if e["component"] == "evaluate" and e["output"]]
            row["accuracy"] = evaluated[0]["properties"].get("accuracy") if evaluated else None
            row["pushed_version"] = pushed[0]["properties"].get("version") if pushed else None
            out.append({"run_id": context.name, **row})
        return out

    def _executions(self, context) -> list[dict[str, Any]]:
        pb = _pb()
        executions = sorted(self.store.get_executions_by_context(context.id), key=lambda e: e.id)
        events = self.store.get_events_by_execution_ids([e.id for e in executions]) if executions else []
        outputs = {ev.execution_id: ev.artifact_id for ev in events if ev.type == pb.Event.OUTPUT}
        found = {a.id: a for a in self.store.get_artifacts_by_id(list(outputs.values()))} if outputs else {}
        types = {t.id: t.name for t in self.store.get_execution_types()}
        return [{"component": types[e.type_id], "state": _get(e.properties, "state"),
                 "seconds": _get(e.properties, "seconds"), "error": _get(e.properties, "error"),
                 "rebuilt": _get(e.properties, "rebuilt"),
                 "output": self._describe(found[outputs[e.id]]) if e.id in outputs else None}
                for e in executions]

    def _describe(self, artifact) -> dict[str, Any]:
        pb = _pb()
        if artifact.type_id not in self.kinds:  # one query per type, not per artifact described
            self.kinds[artifact.type_id] = self.store.get_artifact_types_by_id([artifact.type_id])[0].name
        kind = self.kinds[artifact.type_id]
        props = {}
        for name in artifact.properties:
            value = _get(artifact.properties, name)
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
        return self.store.get_context_by_type_and_name(RUN, run_id) is not None

    def run(self, run_id: str) -> dict[str, Any]:
        """One run: its properties, effective config (YAML) and every execution with its output artifact.

        Raises:
            MetadataError: no run has this id.
        """
        context = self.store.get_context_by_type_and_name(RUN, run_id)
        if context is None:
            raise MetadataError(f"{self.name}: no run '{run_id}' (see `python -m pipeline runs list`)")
        found = {p: _get(context.properties, p) for p in RUN_PROPERTIES}
        return {"run_id": run_id, **found, "report": found["report"] and self.resolve(found["report"]),
                "executions": self._executions(context)}

    def lineage(self, version_uri: str | Path) -> dict[str, Any]:
        """What produced a pushed model version (see `engine.lineage.lineage`)."""
        from engine.lineage import lineage

        return lineage(self, version_uri)

    def live_artifacts(self) -> list[dict[str, Any]]:
        """Every artifact marked LIVE, described."""
        pb = _pb()
        return [self._describe(a) for a in self.store.get_artifacts() if a.state == pb.Artifact.LIVE]


def live_of_type(store: Metadata, kind: str) -> list[dict[str, Any]]:
    """The store's LIVE artifacts of one kind (e.g. `PushedModel`), described, oldest first.

    Example:
        >>> [a["uri"] for a in live_of_type(Metadata.open(cfg), "PushedModel")]
        ['pipeline_root/serving/1', 'pipeline_root/serving/2']
    """
    pb = _pb()
    found = [a for a in store.store.get_artifacts_by_type(kind) if a.state == pb.Artifact.LIVE]
    return [store._describe(a) for a in sorted(found, key=lambda a: a.id)]
