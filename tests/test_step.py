"""Tests of `python -m pipeline step`: one node per process, inputs from the run's records, idempotent retries, gates."""
from pathlib import Path

import pytest

from components.idx import read_idx, write_idx
from conftest import write_dataset
from pipeline.config import Config, override
from pipeline.definition import PRODUCTION
from engine.errors import ConfigError, PipelineError
from engine.metadata import Metadata
from pipeline.step import execute_step, exit_code
from test_cli import assert_one_line_error, cli

BUILD = {"tune.enabled": False, "train.epochs": 1, "evaluate.min_accuracy": 0.0}


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and "runs" not in p.relative_to(root).parts
            and p.name != "metadata.sqlite"}


def test_the_steps_of_a_run_take_their_inputs_from_its_records_and_a_retry_changes_nothing(tmp_path):
    data = write_dataset(tmp_path / "data", {"train": 320, "t10k": 64})
    cfg = override(Config(), root=str(tmp_path / "root"), **{"data.dataset": f"idx:{data}", **BUILD})
    for name in PRODUCTION.order[:-1]:
        result = execute_step(cfg, name, "r1")
        assert (result["state"], result["status"], exit_code(result)) == ("executed", "running", 0), result
    last = execute_step(cfg, "push", "r1")
    assert last["status"] == "pushed" and last["summary"]["push"]["version"] == 1
    assert list(last["summary"]["components"]) == list(PRODUCTION.order)
    [run] = Metadata.open(cfg).runs(cfg.root)
    assert run["run_id"] == "r1" and run["status"] == "pushed" and len(run["components"]) == 8
    files = _files(tmp_path / "root")
    retried = execute_step(cfg, "train", "r1")  # as an orchestrator retries a task
    assert (retried["state"], retried["status"]) == ("cached", "pushed"), retried["error"]  # the ended run stays ended
    assert _files(tmp_path / "root") == files
    assert [r["status"] for r in Metadata.open(cfg).runs(cfg.root)] == ["pushed"]


def test_a_step_whose_upstream_has_not_run_says_which(tmp_path):
    cfg = override(Config(), root=str(tmp_path / "root"), **BUILD)
    with pytest.raises(PipelineError, match="step train: run r2 has no recorded output of ingest, schema, tune; "
                                            "run those steps first"):
        execute_step(cfg, "train", "r2")
    with pytest.raises(ConfigError, match="step trian: unknown component; expected one of ingest, statistics"):
        execute_step(cfg, "trian", "r2")
    with pytest.raises(ConfigError, match=r"--run-id '\.\./r2': expected up to 128 letters, digits"):
        execute_step(cfg, "train", "../r2")


def test_validation_blocks_with_exit_3_and_later_steps_do_nothing(tmp_path):
    data = write_dataset(tmp_path / "data", {"train": 120, "t10k": 40})
    labels = read_idx(data / "train-labels-idx1-ubyte.gz").copy()
    labels[5] = 12
    write_idx(data / "train-labels-idx1-ubyte.gz", labels)
    root = tmp_path / "root"
    cfg = override(Config(), root=str(root), **{"data.dataset": f"idx:{data}", **BUILD})
    for name in ("ingest", "statistics", "schema"):
        execute_step(cfg, name, "r3")
    flags = ("--root", root, "--dataset", f"idx:{data}", "--no-tune")
    code, _, err = cli("step", "validate", "--run-id", "r3", *flags)
    assert code == 3
    assert_one_line_error(err, "data validation failed", "feature 'label'")
    code, out, err = cli("step", "train", "--run-id", "r3", *flags)
    assert code == 3 and "train: skipped" not in out
    assert_one_line_error(err, "train: nothing to do: data validation failed", "(after validate)")
    assert not (root / "artifacts" / "train").exists() and not (root / "serving").exists()
    assert [r["status"] for r in Metadata.open(cfg).runs(cfg.root)] == ["blocked"]
