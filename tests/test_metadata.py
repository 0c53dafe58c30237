"""Tests of the ML Metadata records: types, executions, events, contexts, cached runs, lineage, a broken store."""
from pathlib import Path

import pytest

from pipeline.config import Config, MetadataConfig, override
from components.statistics import Statistics
from components.train import Model
from components.versions import PushedModel
from engine.errors import MetadataError
from engine.metadata import Metadata
from engine.runner import Component, Runner


def _stats(*, out_dir: Path, value: int) -> Statistics:
    (out_dir / "train").mkdir()
    (out_dir / "train" / "FeatureStats.pb").write_text(str(value))
    return Statistics(uri=str(out_dir), fingerprint="", splits=("train",))


def _train(stats: Statistics, *, out_dir: Path, epochs: int) -> Model:
    """Like real training, no two executions write the same bytes."""
    trained.append(epochs)
    (out_dir / "model.keras").write_text(f"{Path(stats.path('train')).read_text()} x {epochs} #{len(trained)}")
    return Model(uri=str(out_dir), fingerprint="", history={"accuracy": [0.5] * epochs})


def _push(model: Model, *, out_dir: Path, serving_dir: Path) -> PushedModel:
    version = serving_dir / str(len(list(serving_dir.glob("*"))) + 1) if serving_dir.is_dir() else serving_dir / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_text(Path(model.path).read_text())
    return PushedModel(uri=str(version), fingerprint="", version=int(version.name), model_fingerprint=model.fingerprint)


trained = []
STATS = Component(name="statistics", fn=_stats, inputs=(), output=Statistics)
TRAIN = Component(name="train", fn=_train, inputs=(Statistics,), output=Model)
PUSH = Component(name="push", fn=_push, inputs=(Model,), output=PushedModel)


def _run(cfg: Config, run_id: str, epochs: int = 1, fail: bool = False) -> Runner:
    store = Metadata.open(cfg)
    store.start_run(run_id, cfg.root, "train:\n  epochs: 1\n", "idx:/data")
    runner = Runner(cfg.root, metadata=store)
    model = runner(TRAIN, runner(STATS, value=1), epochs=epochs)
    if fail:
        with pytest.raises(ZeroDivisionError):
            runner(Component(name="push", fn=lambda m, *, out_dir: 1 / 0 and m, inputs=(Model,), output=PushedModel),
                   model)
        store.finish_run("failed", "push failed")
        return runner
    runner(PUSH, model, serving_dir=cfg.serving_dir)
    store.finish_run("pushed", None)
    return runner


def test_runs_are_recorded_and_a_cached_run_adds_no_artifacts(tmp_path):
    cfg = override(Config(), root=str(tmp_path / "root"))
    _run(cfg, "20260101T000000-aaaa")
    store = Metadata.open(cfg, create=False)
    types = {t.name for t in store.mlmd.get_artifact_types()}
    assert types >= {"Statistics", "Model", "PushedModel"}
    assert {t.name for t in store.mlmd.get_execution_types()} >= {"statistics", "train", "push"}
    assert {t.name for t in store.mlmd.get_context_types()} == {"pipeline", "pipeline_run"}
    artifacts = store.live_artifacts()
    assert len(artifacts) == 3 and all(a["properties"]["digest"] for a in artifacts)
    model = next(a for a in artifacts if a["type"] == "Model")
    assert model["properties"]["history"] == {"accuracy": [0.5]}  # typed fields become properties

    _run(cfg, "20260101T000001-bbbb")  # identical: every component cached
    store = Metadata.open(cfg, create=False)
    assert len(store.mlmd.get_artifacts()) == 3
    second = store.run("20260101T000001-bbbb")
    assert [(e["component"], e["state"]) for e in second["executions"]] == [
        ("statistics", "cached"), ("train", "cached"), ("push", "cached")]
    assert second["status"] == "pushed" and second["config"].startswith("train:")
    assert [r["run_id"] for r in store.runs(cfg.root)] == ["20260101T000000-aaaa", "20260101T000001-bbbb"]
    assert store.runs(cfg.root)[0]["pushed_version"] == 1

    lineage = store.lineage(cfg.serving_dir / "1")
    assert lineage["run_id"] == "20260101T000000-aaaa" and lineage["version"] == 1
    assert lineage["model"]["uri"] == model["uri"] and lineage["statistics"]["type"] == "Statistics"
    assert lineage["train_run"]["state"] == "executed"  # the execution that wrote it, not a cached one


def test_a_training_change_records_a_new_model_and_a_failure(tmp_path):
    cfg = override(Config(), root=str(tmp_path / "root"))
    _run(cfg, "20260101T000000-aaaa")
    runner = _run(cfg, "20260101T000001-bbbb", epochs=2, fail=True)
    assert runner.records["statistics"]["state"] == "cached" and runner.records["train"]["state"] == "executed"
    store = Metadata.open(cfg, create=False)
    failed = store.run("20260101T000001-bbbb")
    assert failed["status"] == "failed" and failed["error"] == "push failed"
    assert failed["executions"][-1]["state"] == "failed" and "division by zero" in failed["executions"][-1]["error"]
    assert len([a for a in store.live_artifacts() if a["type"] == "Model"]) == 2


def test_rebuilt_artifact_replaces_the_old_record(tmp_path):
    cfg = override(Config(), root=str(tmp_path / "root"))
    runner = _run(cfg, "20260101T000000-aaaa")
    Path(runner.outputs["train"].path).write_text("tampered")
    _run(cfg, "20260101T000001-bbbb")
    store = Metadata.open(cfg, create=False)
    models = [a for a in store.mlmd.get_artifacts_by_uri(store.stored(runner.outputs["train"].uri))]
    assert len(models) == 2 and sorted(a.state for a in models) == [2, 4]  # one LIVE, one DELETED
    assert store.run("20260101T000001-bbbb")["executions"][1]["rebuilt"].startswith("was altered: model.keras")
    for artifact in store.live_artifacts():  # nothing LIVE describes files that are gone
        assert Path(artifact["uri"]).exists()


def test_broken_or_missing_store_gives_one_clear_error(tmp_path):
    cfg = override(Config(), root=str(tmp_path / "root"))
    with pytest.raises(MetadataError, match=r"metadata.sqlite: no metadata store: no run was recorded"):
        Metadata.open(cfg, create=False)
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "metadata.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(MetadataError, match=r"metadata.sqlite: cannot open the metadata store \(.*\); move it aside"):
        Metadata.open(cfg)
    elsewhere = override(cfg, **{"metadata.sqlite": str(tmp_path / "other.sqlite")})
    assert Metadata.open(elsewhere).name == str(tmp_path / "other.sqlite")
    with pytest.raises(MetadataError, match="no run 'nope'"):
        Metadata.open(elsewhere).run("nope")


def test_mysql_connection_comes_from_config():
    from pipeline.config import MySQLConfig
    from engine.metadata import connection_config

    cfg = override(Config(), root="/r")
    conn, name = connection_config(cfg)
    assert conn.sqlite.filename_uri == "/r/metadata.sqlite" and name == "/r/metadata.sqlite"
    shared = Config(metadata=MetadataConfig(mysql=MySQLConfig(host="db", port=3307, database="mlmd", user="ml",
                                                              password="pw")))
    conn, name = connection_config(shared)
    assert (conn.mysql.host, conn.mysql.port, conn.mysql.database, conn.mysql.user, conn.mysql.password) == (
        "db", 3307, "mlmd", "ml", "pw")
    assert not conn.HasField("sqlite") and name == "mysql://ml@db:3307/mlmd"


@pytest.mark.parametrize("written", ["", "***"])  # not in the YAML, or masked in a recorded config
def test_a_mysql_password_can_come_from_the_environment(monkeypatch, written):
    from pipeline.config import MySQLConfig
    from engine.metadata import connection_config

    monkeypatch.setenv("PIPELINE_MYSQL_PASSWORD", "from-env")
    cfg = Config(metadata=MetadataConfig(mysql=MySQLConfig(host="db", password=written)))
    assert connection_config(cfg)[0].mysql.password == "from-env"
    given = Config(metadata=MetadataConfig(mysql=MySQLConfig(host="db", password="in-yaml")))
    assert connection_config(given)[0].mysql.password == "in-yaml"


def test_a_store_on_a_full_disk_names_the_cause_on_every_write_and_is_whole_afterwards(tmp_path):
    """MLMD's SQLite leaves a failed COMMIT's transaction open: without a fresh connection every later
    write said only "Transaction already open". Run in a process whose files may not grow."""
    import subprocess
    import sys

    from test_cli import REPO

    script = f"""
import os, resource, signal, sys
sys.path.insert(0, {str(REPO)!r})
from pipeline.config import Config, override
from engine.errors import MetadataError
from engine.metadata import Metadata
cfg = override(Config(), root={str(tmp_path / "root")!r})
store = Metadata.open(cfg)
store.start_run("first", cfg.root, "x: 1", "idx:/d")
size = os.path.getsize(os.path.join(cfg.root, "metadata.sqlite"))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
for run_id in ("second", "third"):
    try:
        store.start_run(run_id, cfg.root, "y" * 100000, "idx:/d")
    except MetadataError as exc:
        print(exc)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == 2, done.stderr[-2000:]
    for line in lines:
        assert line == (f"{tmp_path / 'root' / 'metadata.sqlite'}: disk full (disk I/O error: the metadata store "
                        "cannot grow); free space and run again: finished components are reused")
    store = Metadata.open(override(Config(), root=str(tmp_path / "root")), create=False)
    assert store.run("first")["status"] in ("running", "interrupted") and not store.has_run("second")


def test_a_store_that_fails_while_a_push_is_recorded_still_gives_the_summary_and_the_next_run_records_it(
        tmp_path, monkeypatch):
    """The model is live in serving/1 when the store fails: the run is `failed` naming the live version, its
    summary and report are written, and the next run records the version in the run that pushed it and how
    that run ended."""
    import json

    from conftest import write_dataset
    from pipeline import run
    from engine.errors import MetadataError, RunFailed

    data = write_dataset(tmp_path / "data", {"train": 320, "t10k": 64})
    record = Metadata.record

    def full(self, *args, **kwargs):
        raise MetadataError(f"{self.name}: the metadata store failed (database or disk is full)")

    def record_until_push(self, component, *args, **kwargs):
        if component.name == "push":  # from here on every write fails, as on a disk that filled up
            monkeypatch.setattr(Metadata, "finish_run", full)
            full(self)
        return record(self, component, *args, **kwargs)

    monkeypatch.setattr(Metadata, "record", record_until_push)
    root = tmp_path / "root"
    with pytest.raises(RunFailed, match=r"database or disk is full.*push's output .*serving/1 was committed but not "
                                        r"recorded: the next run records it") as failed:
        run(f"idx:{data}", root=root, no_tune=True, epochs=1, min_accuracy=0)
    summary = failed.value.summary
    assert summary["status"] == "failed" and summary["push"]["version"] == 1
    run_dir = root / "runs" / summary["run_id"]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    assert (run_dir / "report.html").is_file() and (root / "serving" / "1" / "saved_model.pb").is_file()
    from components.versions import unrecorded_versions
    from engine.metadata import live_of_type

    def unrecorded():
        store = Metadata.open(override(Config(), root=str(root)), create=False)
        return unrecorded_versions(root / "serving", root, [a["uri"] for a in live_of_type(store, "PushedModel")])

    assert unrecorded() == [str(root / "serving" / "1")]  # until a run records it

    monkeypatch.undo()
    # Any next run records it in the run that pushed it, with what it was pushed from: here one that stops
    # before push, so nothing of its own could record the version.
    partial = run(f"idx:{data}", root=root, no_tune=True, epochs=1, min_accuracy=0, stop="validate")
    assert partial["status"] == "partial" and "unrecorded_versions" not in partial and unrecorded() == []
    store = Metadata.open(override(Config(), root=str(root)), create=False)
    lineage = store.lineage(root / "serving" / "1")
    assert lineage["run_id"] == summary["run_id"] and lineage["model"]["uri"] == summary["components"]["train"]["uri"]
    earlier = store.run(summary["run_id"])
    assert earlier["status"] == "failed" and "committed but not recorded" in earlier["error"]
    again = run(f"idx:{data}", root=root, no_tune=True, epochs=1, min_accuracy=0)
    assert again["status"] == "pushed" and again["push"]["version"] == 1  # not pushed twice
    assert sorted(p.name for p in (root / "serving").iterdir()) == ["1"]
    assert Metadata.open(override(Config(), root=str(root))).lineage(root / "serving" / "1")["run_id"] == \
        summary["run_id"]


# What MLMD raised on a really full filesystem (a 512 KiB tmpfs filled up), the record's proto shortened here.
ENOSPC_WRITE = ('Cannot create node for type_id: 11 name: "r" properties { key: "config" value { string_value: "'
                + "y" * 1000 + '" } }Error when executing query: database or disk is full query:  INSERT INTO '
                '`Context`(    `type_id`, `name`) VALUES(11, \'r\');')
ENOSPC_OPEN = ("Error when executing query: database or disk is full query:  CREATE TABLE IF NOT EXISTS `Type` ("
               "    `id` INTEGER PRIMARY KEY AUTOINCREMENT );")


def test_a_store_on_a_full_disk_says_so_in_one_line_when_written_or_created(tmp_path):
    """SQLITE_FULL (ENOSPC) as MLMD words it, on a write and on creating a new store's tables: one line naming the
    store, without the record MLMD was writing, and no advice to move a store with nothing wrong aside."""
    from ml_metadata import errors
    from ml_metadata.metadata_store import metadata_store

    from engine.mlmd import Store

    class Full:
        def put_contexts(self, contexts):
            raise errors.InternalError(ENOSPC_WRITE)

    said = f"{tmp_path}/m.sqlite: disk full (database or disk is full: the metadata store cannot grow); free space " \
           "and run again: finished components are reused"
    with pytest.raises(MetadataError) as failed:
        Store(Full, f"{tmp_path}/m.sqlite", tmp_path / "m.sqlite").put_contexts([])
    assert str(failed.value) == said

    def cannot_create(*args, **kwargs):
        raise RuntimeError(ENOSPC_OPEN)

    cfg = override(Config(), root=str(tmp_path), **{"metadata.sqlite": f"{tmp_path}/m.sqlite"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metadata_store, "MetadataStore", cannot_create)
        with pytest.raises(MetadataError) as failed:
            Metadata.open(cfg)
    assert str(failed.value) == said
