"""Tests of the Kubeflow Pipelines back end: the compiled v2 spec, and the same tasks run offline by kfp.local."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from components.idx import read_idx, write_idx
from conftest import write_dataset
from engine.errors import ConfigError
from pipeline import kubeflow
from pipeline.definition import PRODUCTION
from test_cli import assert_one_line_error, cli

BUILD = ["--no-tune", "--epochs", "1", "--min-accuracy", "0"]


def _compile(tmp_path, *flags, config: str | None = None):
    """Compiles the spec with `flags` (and a config file holding `config`); returns (exit code, stderr, the spec,
    its kfp-kubernetes platform spec, the node tasks by name)."""
    spec_path, config_path = tmp_path / "pipeline.yaml", tmp_path / "kfp.yaml"
    config_path.write_text(config or "{}")
    code, _, err = cli("kfp", "compile", "--output", spec_path, "--config", config_path, *flags)
    if code:
        return code, err, None, None, None
    spec, platform = list(yaml.safe_load_all(spec_path.read_text()))
    return code, err, spec, platform, spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]


def test_the_spec_has_a_task_per_node_ordered_by_their_artifacts(tmp_path):
    spec_path = tmp_path / "pipeline.yaml"
    code, _, err = cli("kfp", "compile", "--output", spec_path, "--image", "registry.local/mnist:1", "--root",
                       "/data/root", "--no-tune", "--config", Path(__file__).parent.parent / "configs" / "mnist.yaml")
    assert code == 0, err
    spec, platform = list(yaml.safe_load_all(spec_path.read_text()))
    tasks = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]  # inside the exit handler
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
    assert len(mounts) == 9 and all(m["pvcMount"][0]["mountPath"] == "/data/root" for m in mounts.values())
    assert all(m["pvcMount"][0]["constant"] == "pipeline-root" for m in mounts.values())


RESOURCES = """
kubeflow:
  retries: 3
  backoff_seconds: 45
  cpu: "500m"
  memory: 3Gi
  resources: {train: {cpu: "4", memory: 8G, gpu: 2}, tune: {gpu: 1}}
"""


def test_every_task_has_the_configs_retries_and_requests_and_a_gpu_only_where_asked(tmp_path):
    code, err, spec, _, tasks = _compile(tmp_path, config=RESOURCES)
    assert code == 0, err
    finish = spec["root"]["dag"]["tasks"]["finish"]
    for name, task in {**tasks, "finish": finish}.items():
        assert task["retryPolicy"] == {"maxRetryCount": 3, "backoffDuration": "45s", "backoffFactor": 2.0,
                                       "backoffMaxDuration": "3600s"}, name
        resources = spec["deploymentSpec"]["executors"][f"exec-{name}"]["container"]["resources"]
        cpu, memory, gpus = {"train": ("4", "8G", "2"), "tune": ("500m", "3Gi", "1")}.get(name, ("500m", "3Gi", None))
        assert (resources["resourceCpuRequest"], resources["resourceMemoryRequest"]) == (cpu, memory), name
        if gpus:
            assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu", name
            assert resources["accelerator"]["resourceCount"] == gpus, name
        else:
            assert "accelerator" not in resources, name  # gpu 0: no accelerator asked for


def test_the_exit_handlers_task_finishes_the_run_whatever_became_of_the_tasks(tmp_path):
    code, err, spec, platform, tasks = _compile(tmp_path)
    assert code == 0, err
    root_tasks = spec["root"]["dag"]["tasks"]
    assert sorted(root_tasks) == ["exit-handler-1", "finish"]
    finish = root_tasks["finish"]
    assert finish["dependentTasks"] == ["exit-handler-1"]
    assert finish["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}  # after failures too
    assert finish["inputs"]["parameters"]["component"]["runtimeValue"]["constant"] == "--finish"  # step --finish
    assert finish["cachingOptions"] == {}
    executor = spec["deploymentSpec"]["executors"]["exec-finish"]["container"]
    assert '"pipeline", "step", component' in " ".join(executor["args"] + executor["command"])
    assert "pvcMount" in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-finish"]


MYSQL = 'metadata: {mysql: {host: db.internal, user: mlmd, password: "Xq7-never-in-the-spec"}}\n'


def test_the_mysql_password_comes_from_a_secret_and_never_reaches_the_spec(tmp_path):
    code, err, spec, platform, tasks = _compile(tmp_path, "--mysql-secret", "mlmd-db:db-password", config=MYSQL)
    assert code == 0, err
    assert "Xq7-never-in-the-spec" not in (tmp_path / "pipeline.yaml").read_text()
    config = yaml.safe_load(spec["root"]["inputDefinitions"]["parameters"]["config_yaml"]["defaultValue"])
    assert config["metadata"]["mysql"]["password"] == "***"  # the tasks read $PIPELINE_MYSQL_PASSWORD instead
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert sorted(executors) == sorted(f"exec-{name}" for name in [*PRODUCTION.order, "finish"])
    for executor in executors.values():
        assert executor["secretAsEnv"] == [{"secretName": "mlmd-db", "keyToEnv": [
            {"secretKey": "db-password", "envVar": "PIPELINE_MYSQL_PASSWORD"}]}]
    code, err, _, platform, _ = _compile(tmp_path, config=MYSQL.replace("mysql: {", "mysql: {port: 3307, ")
                                         + "kubeflow: {mysql_secret: mlmd-db}\n")
    assert code == 0, err  # the secret from the config; its key defaults to `password`
    assert {e["secretAsEnv"][0]["keyToEnv"][0]["secretKey"]
            for e in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()} == {"password"}


def test_without_a_mysql_store_no_task_reads_a_secret(tmp_path):
    code, err, _, platform, _ = _compile(tmp_path)
    assert code == 0, err
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert len(executors) == 9 and not any("secretAsEnv" in e for e in executors.values())


@pytest.mark.parametrize("flags, config, message", [
    ((), MYSQL, "metadata.mysql.password: a compiled spec never carries the password; expected the Kubernetes "
                "secret"),
    (("--mysql-secret", "mlmd-db"), "{}", "kubeflow.mysql_secret 'mlmd-db': the config has no metadata.mysql"),
    (("--mysql-secret", "MLMD_db"), MYSQL, "config 'kubeflow.mysql_secret': expected NAME[:KEY]"),
    ((), "kubeflow: {retries: -1}", "config 'kubeflow.retries': expected an integer at least 0 and at most 100, "
                                    "got -1"),
    ((), "kubeflow: {backoff_seconds: 7200}", "config 'kubeflow.backoff_seconds': expected an integer at least 0 and "
                                              "at most 3600, got 7200"),
    ((), "kubeflow: {cpu: 2 cores}", "config 'kubeflow.cpu': expected a CPU quantity such as '2', '0.5' or '500m', "
                                     "got '2 cores'"),
    ((), "kubeflow: {cpu: 4}", "config 'kubeflow.cpu': expected str, got int 4"),
    ((), "kubeflow: {memory: 8GB}", "config 'kubeflow.memory': expected a memory quantity such as '4G' or '512Mi', "
                                    "got '8GB'"),
    ((), "kubeflow: {gpu: 3}", "config 'kubeflow.gpu': expected one of 0, 1, 2, 4, 8, 16, got 3"),
    ((), "kubeflow: {accelerator: 'nvidia gpu'}", "config 'kubeflow.accelerator': expected an accelerator type"),
    ((), "kubeflow: {resources: {train: {memory: lots}}}", "config 'kubeflow.resources.train.memory': expected a "
                                                           "memory quantity"),
    ((), "kubeflow: {resources: {train: {gpu: -1}}}", "config 'kubeflow.resources.train.gpu': expected one of 0, 1, "
                                                      "2, 4, 8, 16, got -1"),
    ((), "kubeflow: {resources: {trainer: {gpu: 1}}}", "config: unknown key 'kubeflow.resources.trainer'; known keys "
                                                       "in kubeflow.resources: evaluate, ingest, push"),
])
def test_a_bad_kubeflow_value_is_refused_in_one_line_with_exit_2_and_nothing_written(tmp_path, flags, config, message):
    code, err, _, _, _ = _compile(tmp_path, *flags, config=config)
    assert code == 2
    assert_one_line_error(err, message)
    assert not list(tmp_path.glob("*pipeline*"))


def test_a_spec_that_would_carry_the_password_is_refused(tmp_path, monkeypatch):
    from pipeline import config as config_module, kubeflow

    cfg = config_module.load(None)
    cfg = config_module.override(cfg, **{"metadata.mysql": {"password": "Xq7-never-in-the-spec"},
                                         "kubeflow.mysql_secret": "mlmd-db"})
    monkeypatch.setattr(config_module, "to_dict", dataclasses.asdict)  # as if the recorded config were not masked
    with pytest.raises(ConfigError, match=r"pipeline.yaml: the spec would carry metadata.mysql.password; nothing "
                                          r"written$"):
        kubeflow.compile_spec(cfg, tmp_path / "pipeline.yaml")
    assert list(tmp_path.iterdir()) == []


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
    assert err.count("finished with status \x1b[92mSUCCESS") == 10  # 8 tasks, the exit handler's and the pipeline
    assert "Task \x1b[96m'finish'\x1b[0m finished with status \x1b[92mSUCCESS" in err  # found the run ended
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
    assert "Executing task \x1b[96m'finish'" not in err  # kfp.local runs an exit handler only after success
    assert not (root / "artifacts" / "train").exists() and not (root / "serving").exists()
    assert_one_line_error(err, "data validation failed", "feature 'label'")


def test_the_image_installs_exactly_as_the_readme_says():
    repo = Path(__file__).resolve().parent.parent
    readme = (repo / "README.md").read_text()
    install = readme.split("<!-- quickstart:install -->")[1].split("```")[1].removeprefix("bash").strip()
    runs = [line for line in (repo / "Dockerfile").read_text().splitlines() if line.startswith("RUN ")]
    assert runs == [f"RUN {install}"]


def _run_state(root: Path) -> dict:
    code, out, err = cli("runs", "list", "--root", root, "--json")
    assert code == 0, err
    [run] = json.loads(out)
    return run


def test_a_step_killed_by_sigkill_leaves_the_run_running_until_step_finish_records_it_failed(tmp_path):
    data = write_dataset(tmp_path / "data", {"train": 60, "t10k": 20})
    root, flags = tmp_path / "root", ["--dataset", f"idx:{data}", "--root", tmp_path / "root", *BUILD, "--json"]
    code, _, err = cli("step", "ingest", "--run-id", "k1", *flags, env={"PIPELINE_FAILPOINTS": "ingest.start=SIGKILL"})
    assert code == -9, err[-2000:]  # the process could record nothing
    assert _run_state(root)["status"] == "running"
    code, out, err = cli("step", "--finish", "--run-id", "k1", *flags)
    result = json.loads(out)
    message = "step ingest ended without recording how (killed, e.g. by SIGKILL or out of memory)"
    assert code == 1 and (result["step"], result["state"], result["status"]) == ("finish", "executed", "failed"), err
    assert_one_line_error(err, message)
    run = _run_state(root)
    assert (run["status"], run["error"], run["components"]) == ("failed", message, {})
    summary = json.loads((root / "runs" / "k1" / "summary.json").read_text())
    assert summary == result["summary"] and summary["status"] == "failed" and Path(summary["report"]).is_file()
    code, out, err = cli("step", "--finish", "--run-id", "k1", *flags)
    again = json.loads(out)
    assert code == 1 and (again["state"], again["status"], again["summary"]) == ("skipped", "failed", summary), err
    # The compiled spec's `finish` task runs that command and succeeds once the end is recorded (the run failed).
    task = kubeflow._step_component("mnist-pipeline:latest", kubeflow.FINISH).python_func
    config_yaml = (root / "runs" / "k1" / "config.yaml").read_text()
    assert task(component="--finish", run_id="k1", job_id="", root=str(root), config_yaml=config_yaml) == ""
    assert _run_state(root)["status"] == "failed"


@pytest.mark.parametrize("args", [("step", "ingest", "--finish"), ("step",)])
def test_step_takes_a_component_or_finish(args):
    code, _, err = cli(*args, "--run-id", "r1")
    assert code == 2
    assert_one_line_error(err, "step: give COMPONENT or --finish, not both and not neither")


@pytest.mark.slow
def test_kfp_local_records_a_run_whose_task_was_killed_failed_naming_the_task(tmp_path):
    data = write_dataset(tmp_path / "data", {"train": 60, "t10k": 20})
    root = tmp_path / "root"
    code, out, err = cli("kfp", "run", "--dataset", f"idx:{data}", "--root", root, *BUILD, "--json",
                         env={"PIPELINE_FAILPOINTS": "statistics.start=SIGKILL"})
    summary = json.loads(out)
    assert code == 1, err[-3000:]
    assert "Task \x1b[96m'statistics'\x1b[0m finished with status \x1b[91mFAILURE" in err
    assert "Executing task \x1b[96m'schema'" not in err
    message = "step statistics ended without recording how (killed, e.g. by SIGKILL or out of memory)"
    assert (summary["status"], summary["error"], list(summary["components"])) == ("failed", message, ["ingest"])
    run = _run_state(root)
    assert (run["run_id"], run["status"], run["error"]) == (summary["run_id"], "failed", message)
    assert run["components"] == {"ingest": "executed"}
    code, out, err = cli("runs", "show", summary["run_id"], "--root", root, "--json")
    assert code == 0 and json.loads(out)["status"] == "failed", err
