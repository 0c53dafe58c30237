"""Tests of the Kubeflow Pipelines back end: the compiled v2 spec, and the same tasks run offline by kfp.local."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from components.idx import read_idx, write_idx
from conftest import write_dataset
from pipeline.definition import PRODUCTION
from test_cli import assert_one_line_error, cli

BUILD = ["--no-tune", "--epochs", "1", "--min-accuracy", "0"]


def test_the_spec_has_a_task_per_node_ordered_by_their_artifacts(tmp_path):
    spec_path = tmp_path / "pipeline.yaml"
    code, _, err = cli("kfp", "compile", "--output", spec_path, "--image", "registry.local/mnist:1", "--root",
                       "/data/root", "--no-tune", "--config", Path(__file__).parent.parent / "configs" / "mnist.yaml")
    assert code == 0, err
    spec, platform = list(yaml.safe_load_all(spec_path.read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    assert sorted(tasks) == sorted(PRODUCTION.order)
    for name, task in tasks.items():
        assert sorted(task.get("dependentTasks", [])) == sorted(PRODUCTION.node[name].upstream())
        params = task["inputs"]["parameters"]
        assert params["component"]["runtimeValue"]["constant"] == name and params["root"]["runtimeValue"][
            "constant"] == "/data/root"
        assert params["job_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"  # run id from the KFP run
        assert task["cachingOptions"] == {}  # KFP's caching off: the project's cache decides
    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {"registry.local/mnist:1"}
    assert all("pipeline" in " ".join(e["container"]["args"] + e["container"]["command"])
               for e in executors.values())
    config = yaml.safe_load(spec["root"]["inputDefinitions"]["parameters"]["config_yaml"]["defaultValue"])
    assert config["tune"]["enabled"] is False and config["root"] == "/data/root"
    mounts = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert len(mounts) == 8 and all(m["pvcMount"][0]["mountPath"] == "/data/root" for m in mounts.values())


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for sub in ("artifacts", "serving") for p in (root / sub).rglob("*")
            if p.is_file()}


@pytest.mark.slow
def test_kfp_local_runs_every_task_and_a_rerun_reuses_every_step(tmp_path):
    data = write_dataset(tmp_path / "data", {"train": 320, "t10k": 64})
    root = tmp_path / "root"
    code, out, err = cli("kfp", "run", "--dataset", f"idx:{data}", "--root", root, *BUILD, "--json")
    summary = json.loads(out)
    assert code == 0 and summary["status"] == "pushed", err[-3000:]
    assert err.count("finished with status \x1b[92mSUCCESS") == 9  # 8 tasks and the pipeline
    code, out, _ = cli("runs", "list", "--root", root, "--json")
    [run] = json.loads(out)
    assert run["run_id"] == summary["run_id"] and len(run["components"]) == 8
    code, out, err = cli("predict", "--model", root / "serving" / "1", "--dataset", f"idx:{data}", "--json")
    assert code == 0 and json.loads(out)["accuracy"] > 0.5, err
    files = _files(root)
    code, out, err = cli("kfp", "run", "--dataset", f"idx:{data}", "--root", root, *BUILD, "--json")
    again = json.loads(out)
    assert code == 0 and {c["state"] for c in again["components"].values()} == {"cached"}, err[-3000:]
    assert _files(root) == files and again["push"]["version"] == 1


@pytest.mark.slow
def test_a_blocked_validation_fails_its_task_with_exit_3_and_nothing_after_it_works(tmp_path):
    data = write_dataset(tmp_path / "data", {"train": 120, "t10k": 40})
    labels = read_idx(data / "train-labels-idx1-ubyte.gz").copy()
    labels[7] = 12
    write_idx(data / "train-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    root = tmp_path / "root"
    code, out, err = cli("kfp", "run", "--dataset", f"idx:{data}", "--root", root, *BUILD, "--json")
    summary = json.loads(out)
    assert code == 3 and summary["status"] == "blocked", err[-3000:]
    assert "Task \x1b[96m'validate'\x1b[0m finished with status \x1b[91mFAILURE" in err
    assert list(summary["components"]) == ["ingest", "statistics", "schema", "validate"]
    assert not (root / "artifacts" / "train").exists() and not (root / "serving").exists()
    assert_one_line_error(err, "data validation failed", "feature 'label'")


def test_the_image_installs_exactly_as_the_readme_says():
    repo = Path(__file__).resolve().parent.parent
    readme = (repo / "README.md").read_text()
    install = readme.split("<!-- quickstart:install -->")[1].split("```")[1].removeprefix("bash").strip()
    runs = [line for line in (repo / "Dockerfile").read_text().splitlines() if line.startswith("RUN ")]
    assert runs == [f"RUN {install}"]
