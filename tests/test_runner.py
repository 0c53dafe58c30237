"""Tests of the component runner: caching by inputs and parameters, atomic outputs, rebuilds."""
from pathlib import Path

import pytest

from engine.artifacts import RECORD
from components.schema import Schema
from components.statistics import Statistics
from engine.errors import ConfigError, PipelineError
from engine.runner import Component, Runner, StopRun

calls = []


def _make_stats(*, out_dir: Path, value: int) -> Statistics:
    calls.append(value)
    (out_dir / "train").mkdir()
    (out_dir / "train" / "FeatureStats.pb").write_text(str(value))
    return Statistics(uri=str(out_dir), fingerprint="", splits=("train",))


def _make_schema(stats: Statistics, *, out_dir: Path) -> Schema:
    calls.append("schema")
    (out_dir / "schema.pbtxt").write_text(Path(stats.path("train")).read_text())
    return Schema(uri=str(out_dir), fingerprint="", source="inferred")


STATS = Component(name="stats", fn=_make_stats, inputs=(), output=Statistics)
SCHEMA = Component(name="schema", fn=_make_schema, inputs=(Statistics,), output=Schema)


@pytest.fixture(autouse=True)
def _reset():
    calls.clear()


def test_second_run_is_cached_and_parameters_invalidate(tmp_path):
    first = Runner(tmp_path)
    stats = first(STATS, value=1)
    schema = first(SCHEMA, stats)
    assert Path(schema.path).read_text() == "1" and Path(stats.uri).parent == tmp_path / "artifacts" / "stats"
    assert stats.fingerprint and not list((tmp_path / "artifacts" / "stats").glob(".*tmp*"))

    second = Runner(tmp_path)
    assert second(SCHEMA, second(STATS, value=1)) == schema
    assert {c["state"] for c in second.records.values()} == {"cached"}

    third = Runner(tmp_path)
    third(SCHEMA, third(STATS, value=2))
    assert calls == [1, "schema", 2, "schema"]


def test_missing_record_is_rebuilt_and_no_cache_executes(tmp_path):
    stats = Runner(tmp_path)(STATS, value=1)
    (Path(stats.uri) / RECORD).unlink()
    again = Runner(tmp_path)
    assert again(STATS, value=1) == stats and again.records["stats"]["state"] == "executed"
    uncached = Runner(tmp_path, use_cache=False)
    uncached(STATS, value=1)
    assert uncached.records["stats"]["state"] == "executed" and calls == [1, 1, 1]


def test_failed_component_leaves_nothing(tmp_path):
    def boom(*, out_dir):
        (out_dir / "partial").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        Runner(tmp_path)(Component(name="boom", fn=boom, inputs=(), output=Statistics))
    assert list((tmp_path / "artifacts" / "boom").iterdir()) == []


def test_input_types_are_checked(tmp_path):
    schema = Schema(uri=str(tmp_path), fingerprint="x", source="inferred")
    with pytest.raises(TypeError, match="schema: expected Statistics, got Schema"):
        Runner(tmp_path)(SCHEMA, schema)


def test_work_dir_survives_a_failed_execution_and_goes_once_committed(tmp_path):
    seen, fail = [], [True]

    def resumable(*, out_dir: Path, work_dir: Path, run_dir: Path, size: int) -> Schema:
        seen.append((sorted(p.name for p in work_dir.iterdir()), run_dir))
        (work_dir / "progress").write_text("epoch 1 done")
        if fail[0]:
            raise RuntimeError("killed")
        return Schema(uri=str(out_dir), fingerprint="", source="inferred")

    component = Component(name="resumable", fn=resumable, inputs=(), output=Schema)
    with pytest.raises(RuntimeError):
        Runner(tmp_path, run_dir=tmp_path / "runs" / "a")(component, size=1)
    work = next((tmp_path / "artifacts" / "resumable").glob(".*.work"))
    assert (work / "progress").is_file()  # kept for the next attempt
    fail[0] = False
    runner = Runner(tmp_path, run_dir=tmp_path / "runs" / "b")
    runner(component, size=1)
    assert seen == [([], tmp_path / "runs" / "a"), (["progress"], tmp_path / "runs" / "b")]  # resumed
    assert not work.exists() and runner.records["resumable"]["state"] == "executed"


def test_altered_or_deleted_output_is_detected_and_rebuilt(tmp_path):
    stats = Runner(tmp_path)(STATS, value=1)
    stats_file = Path(stats.path("train"))
    stats_file.write_text("7")  # same size, other content: only the hash tells
    again = Runner(tmp_path)
    rebuilt = again(STATS, value=1)
    assert again.records["stats"]["state"] == "executed"
    assert "train/FeatureStats.pb was changed after it was written" in again.records["stats"]["rebuilt"]
    assert stats_file.read_text() == "1" and rebuilt == stats  # rebuilt identically: same fingerprint

    stats_file.unlink()
    third = Runner(tmp_path)
    third(STATS, value=1)
    assert third.records["stats"]["rebuilt"] == "was altered: train/FeatureStats.pb is missing"
    assert calls == [1, 1, 1]


def test_a_rebuilt_output_that_differs_invalidates_what_follows(tmp_path):
    """A re-executed component whose files differ (a retrained model) gets a new fingerprint."""
    counter = iter(range(100))

    def unstable(*, out_dir: Path) -> Statistics:
        (out_dir / "train").mkdir()
        (out_dir / "train" / "FeatureStats.pb").write_text(str(next(counter)))
        return Statistics(uri=str(out_dir), fingerprint="", splits=("train",))

    component = Component(name="stats", fn=unstable, inputs=(), output=Statistics)
    first = Runner(tmp_path)
    schema = first(SCHEMA, first(component))
    Path(first.outputs["stats"].path("train")).unlink()
    second = Runner(tmp_path)
    stats = second(component)
    assert stats.fingerprint != first.outputs["stats"].fingerprint
    assert second(SCHEMA, stats) != schema and second.records["schema"]["state"] == "executed"


def test_partial_runs_from_and_to(tmp_path):
    order = ("stats", "schema")
    with pytest.raises(PipelineError, match="--from schema: stats comes before it and has no cached output"):
        runner = Runner(tmp_path, order=order, start="schema")
        runner(SCHEMA, runner(STATS, value=1))
    stopped = Runner(tmp_path, order=order, stop="stats")
    with pytest.raises(StopRun):
        stopped(STATS, value=1)
    assert list(stopped.records) == ["stats"]

    partial = Runner(tmp_path, order=order, start="schema")
    partial(SCHEMA, partial(STATS, value=1))
    assert {n: c["state"] for n, c in partial.records.items()} == {"stats": "cached", "schema": "executed"}
    again = Runner(tmp_path, order=order, start="schema")
    again(SCHEMA, again(STATS, value=1))
    assert again.records["schema"]["state"] == "executed"  # --from always runs it again
    assert calls == [1, "schema", "schema"]

    with pytest.raises(ConfigError, match="--from push: unknown component; expected one of stats, schema"):
        Runner(tmp_path, order=order, start="push")
    with pytest.raises(ConfigError, match="--from schema --to stats: schema comes after stats"):
        Runner(tmp_path, order=order, start="schema", stop="stats")


def test_a_cache_hit_removes_the_work_directory_a_kill_left_after_the_commit(tmp_path):
    stats = Runner(tmp_path)(STATS, value=1)
    work = Path(stats.uri).with_name(f".{Path(stats.uri).name}.work")
    work.mkdir()  # a kill between the commit's rename and the clean-up of the resume state
    again = Runner(tmp_path)
    assert again(STATS, value=1) == stats and again.records["stats"]["state"] == "cached"
    assert not work.exists()
