"""Tests of the history lookups (`engine.history`): ML Metadata queries, with two roots sharing one store."""
import dataclasses
import json
from pathlib import Path

import pytest

from pipeline.config import Config, MetadataConfig, MySQLConfig
from components.ingest import Examples
from components.statistics import Statistics
from components.tune import HyperParameters
from components.versions import PushedModel
from engine.component import Component
from components.versions import serving_baseline
from components.tune import reusable_hyperparameters
from components.validate import previous_span_statistics
from engine.metadata import Metadata
from engine.runner import Runner


def _ingest(*, out_dir: Path, data: str) -> Examples:
    (out_dir / "data.txt").write_text(data)
    return Examples(uri=str(out_dir), fingerprint=f"data-{data}", spec="idx:/d", name="", source="idx:/d",
                    counts={"train": 1})


def _statistics(examples: Examples, *, out_dir: Path) -> Statistics:
    (out_dir / "train").mkdir()
    (out_dir / "train" / "FeatureStats.pb").write_text(examples.fingerprint)
    return Statistics(uri=str(out_dir), fingerprint="", splits=("train",))


def _tune(*, out_dir: Path, search: str, filters: int) -> HyperParameters:
    (out_dir / "values.json").write_text(json.dumps({"filters": filters}))
    return HyperParameters(uri=str(out_dir), fingerprint="", tuner="random", values={"filters": filters}, trials=(),
                           search=search)


def _push(*, out_dir: Path, serving_dir: Path, model: str) -> PushedModel:
    version = serving_dir / str(max([int(p.name) for p in serving_dir.glob("[0-9]*")] or [0]) + 1)
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_text(model)
    (version / "model_info.json").write_text(json.dumps({"model_fingerprint": model}))
    return PushedModel(uri=str(version), fingerprint="", version=int(version.name), model_fingerprint=model)


INGEST = Component("ingest", _ingest, (), Examples)
STATISTICS = Component("statistics", _statistics, (Examples,), Statistics)
TUNE = Component("tune", _tune, (), HyperParameters)
PUSH = Component("push", _push, (), PushedModel)


@pytest.fixture(params=["sqlite", "mysql"])
def shared(request, tmp_path):
    """Two roots (as on two machines) recording into one store: a SQLite file, or a database of a real
    MariaDB server (MLMD creates it)."""
    if request.param == "sqlite":
        metadata = MetadataConfig(sqlite=str(tmp_path / "shared.sqlite"))
    else:
        port = request.getfixturevalue("mysql_server")
        metadata = MetadataConfig(mysql=MySQLConfig(host="127.0.0.1", port=port, database=f"mlmd_{tmp_path.name}"[:64]))
    return [dataclasses.replace(Config(root=str(tmp_path / name)), metadata=metadata) for name in "ab"]


def _run(cfg: Config, run_id: str, status: str, data: str | None = None, **steps) -> Runner:
    store = Metadata.open(cfg)
    store.start_run(run_id, cfg.root, "", "idx:/d")
    runner = Runner(cfg.root, metadata=store)
    if data:
        runner(STATISTICS, runner(INGEST, data=data))
    for name, params in steps.items():
        runner({"tune": TUNE, "push": PUSH}[name], **params)
    store.finish_run(status, None)
    return runner


def test_the_baseline_is_the_newest_version_of_another_model_in_that_serving_directory(shared, tmp_path):
    a, b = shared
    serving = tmp_path / "serving"
    _run(a, "20260101T000000-aaaa", "pushed", push={"serving_dir": serving, "model": "m1"})
    _run(b, "20260102T000000-bbbb", "pushed", push={"serving_dir": serving, "model": "m2"})
    # Read from the directory: no store needed, so a store moved aside or another root's pushes still count.
    found = serving_baseline(serving, "m3")
    assert (found.version, found.model_fingerprint, found.uri) == (2, "m2", str(serving / "2"))
    assert serving_baseline(serving, "m2").version == 1  # a model is not its own baseline
    assert serving_baseline(tmp_path / "elsewhere", "m3") is None  # another serving directory
    (serving / "2" / "saved_model.pb").write_bytes(b"replaced")
    assert serving_baseline(serving, "m3").fingerprint != found.fingerprint  # a replaced version: a new baseline
    (serving / "1" / "saved_model.pb").unlink()  # removed from serving: no longer a baseline
    assert serving_baseline(serving, "m2") is None


def test_a_search_result_is_reused_across_roots_by_its_key_unless_altered(shared):
    a, b = shared
    first = _run(a, "20260101T000000-aaaa", "pushed", tune={"search": "k1", "filters": 32}).outputs["tune"]
    store = Metadata.open(b)
    assert reusable_hyperparameters(store, "k1").values == {"filters": 32}  # found from the other root
    assert reusable_hyperparameters(store, "k2") is None
    newest = _run(b, "20260102T000000-bbbb", "pushed", tune={"search": "k1", "filters": 64}).outputs["tune"]
    assert reusable_hyperparameters(store, "k1").values == {"filters": 64}
    Path(newest.uri, "values.json").write_text("{}")  # altered: never trusted, the older one serves
    assert reusable_hyperparameters(store, "k1").values == {"filters": 32}
    Path(first.uri, "values.json").unlink()
    assert reusable_hyperparameters(store, "k1") is None


def test_the_previous_span_is_the_newest_validated_run_of_this_pipeline_on_other_data(shared):
    a, b = shared
    _run(a, "20260101T000000-aaaa", "pushed", data="one")
    _run(a, "20260102T000000-aaaa", "blocked", data="two")  # failed validation: never a baseline
    _run(b, "20260103T000000-bbbb", "pushed", data="three")  # another pipeline's span
    store = Metadata.open(a)
    found = previous_span_statistics(store, a.root, "data-four")
    assert Path(found.path("train")).read_text() == "data-one"
    assert previous_span_statistics(store, a.root, "data-one") is None  # the same data is no earlier span
    assert Path(previous_span_statistics(store, b.root, "data-four").path("train")).read_text() == "data-three"
