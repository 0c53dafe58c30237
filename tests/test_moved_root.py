"""A root moved (`mv`) or copied (`cp -a`) keeps its history, lineage and cache, and reads only its own files."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import write_dataset
from pipeline.config import Config, MetadataConfig, override
from engine import artifacts, paths
from components.statistics import Statistics
from components.train import Model
from components.tune import HyperParameters
from components.versions import PushedModel
from components.tune import reusable_hyperparameters
from engine.metadata import Metadata
from engine.runner import Component, Runner
from test_cli import cli
from test_runs import BUILD, states

ID = "0123456789abcdef"


def test_paths_under_the_root_are_stored_by_its_id_and_resolved_where_it_is_now(tmp_path):
    root = tmp_path / "root"
    assert paths.under(root / "artifacts" / "train" / "ab12", root) == "artifacts/train/ab12"
    assert paths.under(tmp_path / "serving" / "1", root) is None  # beside the root, not in it
    stored = paths.to_stored(root / "serving" / "1", root, ID)
    assert stored == f"pipeline-root://{ID}/serving/1"
    assert paths.to_stored(stored, root, ID) == stored  # already stored: unchanged
    assert paths.resolve(stored, tmp_path / "moved", ID) == str(tmp_path / "moved" / "serving" / "1")
    # Another root's uri resolves where that root last ran; an unknown root's stays as stored (never found).
    assert paths.resolve(stored, tmp_path / "other", "another id", {ID: "/mnt/root"}.get) == "/mnt/root/serving/1"
    assert paths.resolve(stored, tmp_path / "other", "another id", {}.get) == stored
    outside = paths.to_stored(tmp_path / "serving" / "1", root, ID)
    assert outside == str(tmp_path / "serving" / "1") and paths.resolve(outside, tmp_path / "x", ID) == outside
    assert paths.to_stored(root / "serving" / "1", root, None) == str(root / "serving" / "1")  # no id: absolute
    # A cache key spells paths under the root from `<root>`, others as they are.
    assert paths.portable(root / "serving", root) == "<root>/serving"
    assert paths.portable(tmp_path / "serving", root) == tmp_path / "serving"
    assert paths.portable("idx:/data", root) == "idx:/data"


def test_a_root_id_is_made_once_and_moves_with_the_root(tmp_path):
    assert paths.root_id(tmp_path / "root") is None and not (tmp_path / "root").exists()
    made = paths.root_id(tmp_path / "root", create=True)
    assert made and paths.root_id(tmp_path / "root", create=True) == made == paths.root_id(tmp_path / "root")
    shutil.move(tmp_path / "root", tmp_path / "moved")
    assert paths.root_id(tmp_path / "moved") == made
    assert [p.name for p in (tmp_path / "moved").iterdir()] == [".root-id"]  # no temporary file left


def test_a_record_names_its_uri_from_where_it_is(tmp_path):
    here = tmp_path / "root" / "artifacts" / "push" / "ab12"
    relative = {"uri": "../../../serving/1", artifacts.RELATIVE: True}
    assert artifacts.record_uri(relative, here) == str(tmp_path / "root" / "serving" / "1")
    assert artifacts.record_uri({"uri": ".", artifacts.RELATIVE: True}, here) == str(here)
    # An older record's absolute uri: this directory if it ends in the same <component>/<key>, else as written.
    assert artifacts.record_uri({"uri": "/old/root/artifacts/push/ab12"}, here) == str(here)
    assert artifacts.record_uri({"uri": "/srv/models/3"}, here) == "/srv/models/3"


# A three-component pipeline writing small files: statistics -> train -> push into <root>/serving.
def _stats(*, out_dir: Path) -> Statistics:
    (out_dir / "train").mkdir()
    (out_dir / "train" / "FeatureStats.pb").write_text("stats")
    return Statistics(uri=str(out_dir), fingerprint="", splits=("train",))


def _train(stats: Statistics, *, out_dir: Path) -> Model:
    (out_dir / "model.keras").write_text(Path(stats.path("train")).read_text() + " model")
    return Model(uri=str(out_dir), fingerprint="", history={})


def _push(model: Model, *, out_dir: Path, serving_dir: Path) -> PushedModel:
    version = serving_dir / str(len(list(serving_dir.glob("[0-9]*"))) + 1)
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_text(Path(model.path).read_text())
    return PushedModel(uri=str(version), fingerprint="", version=int(version.name), model_fingerprint=model.fingerprint)


STATS = Component(name="statistics", fn=_stats, inputs=(), output=Statistics)
TRAIN = Component(name="train", fn=_train, inputs=(Statistics,), output=Model)
PUSH = Component(name="push", fn=_push, inputs=(Model,), output=PushedModel)


def _run(root: Path, run_id: str) -> Runner:
    cfg = override(Config(), root=str(root))
    store = Metadata.open(cfg)
    store.start_run(run_id, cfg.root, "", "idx:/data")
    runner = Runner(cfg.root, metadata=store)
    runner(PUSH, runner(TRAIN, runner(STATS)), serving_dir=cfg.serving_dir)
    store.finish_run("pushed", None, str(root / "runs" / run_id / "report.html"))
    return runner


def _store(root: Path) -> Metadata:
    return Metadata.open(override(Config(), root=str(root)), create=False)


def _under(root: Path, store: Metadata) -> bool:
    """Whether every LIVE artifact the store describes is a directory under `root` (none elsewhere)."""
    return all(Path(a["uri"]).is_dir() and paths.under(a["uri"], root) for a in store.live_artifacts())


def test_a_moved_root_keeps_its_runs_lineage_and_cache(tmp_path):
    _run(tmp_path / "root", "run-1")
    shutil.move(tmp_path / "root", tmp_path / "moved")
    moved = tmp_path / "moved"
    again = _run(moved, "run-2")
    assert {c["state"] for c in again.records.values()} == {"cached"}
    assert again.outputs["push"].uri == str(moved / "serving" / "1")
    assert sorted(p.name for p in (moved / "serving").iterdir()) == ["1"]  # no duplicate version
    store = _store(moved)
    assert [r["run_id"] for r in store.runs(str(moved))] == ["run-1", "run-2"]
    assert store.run("run-1")["report"] == str(moved / "runs" / "run-1" / "report.html")
    lineage = store.lineage(moved / "serving" / "1")
    assert lineage["run_id"] == "run-1" and lineage["model"]["uri"] == again.outputs["train"].uri
    assert len(store.mlmd.get_artifacts()) == 3 and _under(moved, store)  # the same records, found where they are


def test_a_copied_root_reads_only_its_own_files(tmp_path):
    first = _run(tmp_path / "root", "run-1")
    subprocess.run(["cp", "-a", str(tmp_path / "root"), str(tmp_path / "copy")], check=True)
    copy = tmp_path / "copy"
    # The original changes after the copy: its model is altered, so reading it would rebuild the copy's.
    Path(first.outputs["train"].path).write_text("altered in the original")
    again = _run(copy, "run-2")
    assert {c["state"] for c in again.records.values()} == {"cached"}
    assert all(paths.under(c["uri"], copy) for c in again.records.values())
    assert _under(copy, _store(copy)) and _store(copy).lineage(copy / "serving" / "1")["run_id"] == "run-1"
    shutil.rmtree(tmp_path / "root")  # the original gone: the copy still reruns from its own cache
    assert {c["state"] for c in _run(copy, "run-3").records.values()} == {"cached"}
    # And the copy's own files are the ones checked: altering them rebuilds there, not anywhere else.
    Path(again.outputs["train"].path).write_text("altered in the copy")
    rebuilt = _run(copy, "run-4")
    assert rebuilt.records["train"]["state"] == "executed" and rebuilt.records["statistics"]["state"] == "cached"
    assert not (tmp_path / "root").exists()  # nothing was written where the original was


def test_a_copy_sharing_its_originals_store_starts_a_history_of_its_own(tmp_path):
    """A store outside the root (shared, as MySQL is): the copy takes a new id, so neither root lists the
    other's runs nor marks them interrupted, and each names only its own files."""
    shared = MetadataConfig(sqlite=str(tmp_path / "shared.sqlite"))
    original, copy = tmp_path / "root", tmp_path / "copy"

    def start(root, run_id):
        store = Metadata.open(override(Config(metadata=shared), root=str(root)))
        store.start_run(run_id, str(root), "", "idx:/data")
        return store

    start(original, "run-1")  # left running: a copy must not mark it interrupted
    subprocess.run(["cp", "-a", str(original), str(copy)], check=True)
    store = start(copy, "run-2")
    assert paths.root_id(copy) != paths.root_id(original)
    assert [r["run_id"] for r in store.runs(str(copy))] == ["run-2"]
    assert [(r["run_id"], r["status"]) for r in store.runs(str(original))] == [("run-1", "running")]
    # The original moved away is the same root again, not a copy: its id and runs are kept.
    shutil.move(original, tmp_path / "moved")
    start(tmp_path / "moved", "run-3")
    assert [r["run_id"] for r in store.runs(str(tmp_path / "moved"))] == ["run-1", "run-3"]


def test_a_store_of_an_older_version_named_after_the_path_is_adopted(tmp_path):
    root = tmp_path / "root"
    _run(root, "run-1")
    store = _store(root)
    context = store.mlmd.get_context_by_type_and_name("pipeline", paths.root_id(root))
    context.name = str(root.resolve())  # as older versions named it, before roots had an id
    store.mlmd.put_contexts([context])
    assert [r["run_id"] for r in _store(root).runs(str(root))] == ["run-1"]  # read as it is
    _run(root, "run-2")  # renamed to the id by the next run, its runs kept
    assert [r["run_id"] for r in _store(root).runs(str(root))] == ["run-1", "run-2"]


def _tune(*, out_dir: Path, search: str) -> HyperParameters:
    (out_dir / "values.json").write_text("{}")
    return HyperParameters(uri=str(out_dir), fingerprint="", tuner="random", values={}, trials=(), search=search)


def test_roots_sharing_a_store_find_each_others_search_where_that_root_is_now(tmp_path):
    tune = Component(name="tune", fn=_tune, inputs=(), output=HyperParameters)
    shared = MetadataConfig(sqlite=str(tmp_path / "shared.sqlite"))
    a, b = (override(Config(metadata=shared), root=str(tmp_path / name)) for name in "ab")

    def run(cfg, run_id):
        store = Metadata.open(cfg)
        store.start_run(run_id, cfg.root, "", "idx:/data")
        runner = Runner(cfg.root, metadata=store)
        found = reusable_hyperparameters(store, "k1")
        if found:
            runner.reuse(tune, found)
        else:
            runner(tune, search="k1")
        store.finish_run("pushed", None)
        return runner.outputs["tune"]

    made = run(a, "run-a")
    shutil.move(tmp_path / "a", tmp_path / "a2")  # and rerun there: the store learns where it is now
    a = override(a, root=str(tmp_path / "a2"))
    assert run(a, "run-a2").uri == str(tmp_path / "a2" / Path(made.uri).relative_to(tmp_path / "a"))
    reused = run(b, "run-b")
    assert reused.uri == str(tmp_path / "a2" / Path(made.uri).relative_to(tmp_path / "a"))
    store = Metadata.open(b)
    assert len(store.mlmd.get_artifacts()) == 1  # b's run recorded the same artifact, not a second one
    assert store.run("run-b")["executions"][0]["output"]["uri"] == reused.uri


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A root after one run of the production pipeline on tiny data (one epoch, no search)."""
    base = tmp_path_factory.mktemp("moved")
    write_dataset(base / "data", {"train": 320, "t10k": 80}, seed=3)
    code, out, err = cli("run", "--dataset", f"idx:{base / 'data'}", "--root", base / "root", *BUILD)
    assert code == 0, err
    return base, json.loads(out)


def _rerun(base: Path, root: Path):
    code, out, err = cli("run", "--dataset", f"idx:{base / 'data'}", "--root", root, *BUILD)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.slow
def test_the_pipeline_on_a_moved_then_copied_root_keeps_runs_lineage_and_a_fully_cached_rerun(built):
    base, first = built
    subprocess.run(["mv", str(base / "root"), str(base / "moved")], check=True)
    moved = base / "moved"
    code, out, err = cli("runs", "list", "--root", moved, "--json")
    assert code == 0 and [r["run_id"] for r in json.loads(out)] == [first["run_id"]], err
    code, out, err = cli("runs", "lineage", "1", "--root", moved, "--json")
    lineage = json.loads(out)
    assert code == 0 and lineage["run_id"] == first["run_id"], err
    key = Path(first["components"]["train"]["uri"]).name
    assert lineage["model"]["uri"] == str(moved / "artifacts" / "train" / key)
    again = _rerun(base, moved)
    assert set(states(again).values()) == {"cached"} and again["push"]["version"] == 1
    assert sorted(p.name for p in (moved / "serving").iterdir()) == ["1"]  # no duplicate version pushed

    subprocess.run(["cp", "-a", str(moved), str(base / "copy")], check=True)
    shutil.rmtree(moved)
    copy = base / "copy"
    third = _rerun(base, copy)
    assert set(states(third).values()) == {"cached"} and third["pushed_model"] == str(copy / "serving" / "1")
    assert all(paths.under(c["uri"], copy) for c in third["components"].values())
    code, out, err = cli("runs", "lineage", "1", "--root", copy, "--json")
    assert code == 0 and json.loads(out)["run_id"] == first["run_id"], err
    code, out, err = cli("runs", "list", "--root", copy, "--json")
    assert [r["run_id"] for r in json.loads(out)] == [first["run_id"], again["run_id"], third["run_id"]]
