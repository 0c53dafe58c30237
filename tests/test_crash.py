"""Crash anywhere: ten SIGKILLs at random moments of a run, then the same command completes (tests/crash_harness.py)."""
import json

import pytest

from crash_harness import crash_and_finish, reran_finished_work

from conftest import write_dataset
from pipeline.config import Config, override
from engine.metadata import Metadata

FLAGS = ["--max-trials", "2", "--max-epochs", "2", "--epochs", "4", "--min-accuracy", "0"]


@pytest.mark.slow
def test_ten_kills_in_a_row_lose_nothing_and_the_run_ends_pushed(tmp_path, seed):
    data = write_dataset(tmp_path / "data", {"train": 1200, "t10k": 100}, seed=seed)
    report = crash_and_finish(f"idx:{data}", tmp_path / "root", FLAGS, kills=10, seed=seed)
    assert report["kills"] == 10, report["attempts"]
    assert report["problems"] == [] and report["status"] == "pushed", report["summary"]["error"]
    assert reran_finished_work(report) == [], report["attempts"]
    died_in = {a["died_in"] for a in report["attempts"] if a["killed"]}
    assert {"ingest", "statistics", "tune", "train", "push"} <= died_in, report["attempts"]
    statuses = [r["status"] for r in Metadata.open(override(Config(), root=str(tmp_path / "root"))).runs(
        str(tmp_path / "root"))]
    # Killed runs are marked as such; one killed after its summary was written ended as the summary says (the
    # next run reads it there), since only the store's copy of its end was lost.
    ended = [json.loads(p.read_text())["status"] for p in sorted((tmp_path / "root" / "runs").glob("*/summary.json"))]
    assert len(statuses) == len(report["attempts"])
    assert statuses == [("pushed" if a["failpoint"] == "run.summarized" else "interrupted") for a in
                        report["attempts"][:-1]] + ["pushed"], (report["attempts"], ended)
    versions = [p.name for p in (tmp_path / "root" / "serving").iterdir() if not p.name.startswith(".")]
    assert versions == ["1"]  # pushed once: a killed push never left a version behind to push again
