"""Multi-worker training (MultiWorkerMirroredStrategy from TF_CONFIG): the cluster's description, and two workers on loopback."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from components import checkpoint
from components.devices import cluster, multi_worker
from conftest import write_dataset
from engine.errors import ConfigError
from engine.failpoints import ENV as FAILPOINTS, REACHED
from test_cli import REPO, assert_one_line_error, cli
from test_distributed_tuning import _free_port

BUILD = ["--no-tune", "--epochs", "3", "--min-accuracy", "0", "--json"]
BUDGET = ["--budget", "1h"]


def _tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def test_the_cluster_comes_from_tf_config_and_a_wrong_one_is_named(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cluster() is None and multi_worker("auto") is None
    with pytest.raises(ConfigError, match="train.distribute multi_worker: expected TF_CONFIG naming two or more"):
        multi_worker("multi_worker")
    monkeypatch.setenv("TF_CONFIG", _tf_config([1, 2], 1))
    found = cluster()
    assert found.member == "worker:1" and not found.chief and multi_worker("none") is None
    text = ("{{function_node __wrapped__CollectiveReduceV2_device_/job:worker/replica:0/task:0/device:CPU:0}} Collective "
            "ops is aborted by: Error reported from /job:worker/task:1: Task /job:worker/replica:0/task:1 heartbeat "
            "timeout.")  # as TensorFlow 2.16 says it on worker 0
    assert found.named(text) == "worker 1 (127.0.0.1:2)"
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]},
                                               "task": {"type": "chief", "index": 0}}))
    assert cluster().chief
    monkeypatch.setenv("TF_CONFIG", _tf_config([1], 0))
    assert cluster() is None  # one task: nothing to span
    monkeypatch.setenv("TF_CONFIG", _tf_config([1, 2], 5))
    with pytest.raises(ConfigError, match="TF_CONFIG: task worker 5 is not in its cluster"):
        cluster()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"], "ps": ["b:1"]},
                                               "task": {"type": "worker", "index": 0}}))
    with pytest.raises(ConfigError, match="TF_CONFIG: task type 'ps' in its cluster; expected only chief and worker"):
        cluster()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match=r"TF_CONFIG: expected JSON .* got '\{not json'"):
        cluster()


def test_a_run_with_a_broken_tf_config_is_refused_in_one_line(tmp_path):
    data = write_dataset(tmp_path / "data", {"train": 60, "t10k": 20})
    code, _, err = cli("run", "--dataset", f"idx:{data}", "--root", tmp_path / "root", *BUILD,
                       env={"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:2"]}}'})
    assert code == 2, err
    assert_one_line_error(err, "TF_CONFIG: expected JSON")
    assert not (tmp_path / "root" / "metadata.sqlite").exists()


def test_a_worker_lost_between_backups_resumes_from_the_previous_one(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    model.optimizer.build(model.trainable_variables)
    for epoch in range(3):
        model.layers[0].kernel.assign(np.full((2, 1), float(epoch)))
        checkpoint.save(model, tmp_path, epoch)
    assert checkpoint.restore(model, tmp_path) == 3
    assert checkpoint.restore(model, tmp_path, epochs=2) == 2
    assert float(model.layers[0].kernel.numpy()[0, 0]) == 1.0  # epoch 1's weights, from the previous backup
    assert checkpoint.restore(model, tmp_path, epochs=1) == 0  # not kept: one epoch back is all it takes


def _start(ports, index, data, root, extra_env=None, *extra):
    env = {**os.environ, "TF_CONFIG": _tf_config(ports, index), **(extra_env or {})}
    args = [sys.executable, "-m", "pipeline", "run", "--dataset", f"idx:{data}", "--root", str(root), *BUILD, *extra]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _finish(procs) -> list[tuple[int, dict, str]]:
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        results.append((proc.returncode, json.loads(out) if out else {}, err))
    return results


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # Label noise caps accuracy near 0.9, so that "within 0.01" compares models that are not both perfect.
    return write_dataset(tmp_path_factory.mktemp("mw") / "data", {"train": 3000, "t10k": 500}, label_noise=0.1)


@pytest.mark.slow
def test_two_workers_on_loopback_push_a_model_as_good_as_one_process(tmp_path, data):
    ports = [_free_port(), _free_port()]
    # Under a budget (an hour: all 3 epochs fit) the workers agree after each epoch on the epochs it allows.
    procs = [_start(ports, i, data, tmp_path / "shared", None, *BUDGET) for i in (0, 1)]
    try:
        (chief_code, chief, chief_err), (worker_code, worker, worker_err) = _finish(procs)
    finally:
        for proc in procs:
            proc.kill()
    assert (chief_code, worker_code) == (0, 0), (chief_err[-2000:], worker_err[-2000:])
    assert chief["status"] == "pushed" and worker["status"] == "trained"
    assert "evaluate" not in worker["components"] and worker["pushed_model"] is None
    # Both trained one model: the same metrics each epoch, over every worker's batches.
    assert chief["training"]["history"] == worker["training"]["history"]
    assert chief["training"]["plan"]["schedule"] == "cosine" and chief["training"]["plan"]["epochs_run"] == 3

    code, out, err = cli("run", "--dataset", f"idx:{data}", "--root", tmp_path / "alone", *BUILD, *BUDGET)
    assert code == 0, err
    alone = json.loads(out)
    assert abs(chief["evaluation"]["accuracy"] - alone["evaluation"]["accuracy"]) <= 0.01, (
        chief["evaluation"]["accuracy"], alone["evaluation"]["accuracy"])


@pytest.mark.slow
def test_a_worker_killed_mid_training_fails_the_chief_naming_it_and_a_rerun_resumes(tmp_path, data):
    ports, root, held = [_free_port(), _free_port()], tmp_path / "shared", tmp_path / "held"
    # Worker 1 holds after its second epoch, before backing it up; the chief backs it up and waits for it.
    procs = [_start(ports, 0, data, root),
             _start(ports, 1, data, root, {FAILPOINTS: "train.epoch_end#2", REACHED: str(held)})]
    try:
        give_up = time.monotonic() + 900  # a bound against a hang, not a speed assumption
        while not (held.exists() and _backups(root) == [1, 2]):
            assert time.monotonic() < give_up and procs[0].poll() is None, procs[0].stderr.read()[-2000:]
            time.sleep(0.1)
        os.killpg(procs[1].pid, signal.SIGKILL)
        code, summary, err = _finish(procs[:1])[0]
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert code == 1, err[-2000:]
    assert_one_line_error(err)
    assert f"error: train: lost worker 1 (127.0.0.1:{ports[1]}) of the multi-worker training" in err, err[-2000:]
    assert summary["status"] == "failed" and "lost worker 1" in summary["error"]

    # Again on both: each resumes from the last epoch both backed up (the chief steps back from its second).
    ports = [_free_port(), _free_port()]
    procs = [_start(ports, i, data, root) for i in (0, 1)]
    try:
        results = _finish(procs)
    finally:
        for proc in procs:
            proc.kill()
    assert [r[0] for r in results] == [0, 0], [r[2][-2000:] for r in results]
    assert all("resuming training after epoch 1" in r[2] for r in results)
    plan = results[0][1]["training"]["plan"]
    assert results[0][1]["status"] == "pushed" and plan["epochs_run"] == 3
    assert results[0][1]["training"]["history"] == results[1][1]["training"]["history"]


def _backups(root: Path) -> list[int]:
    """The epochs each worker's training backup holds."""
    held = []
    for path in (root / "artifacts" / "train").glob(".*.work/backup.npz"):
        try:
            with np.load(path) as saved:
                held.append(int(saved["epoch"]) + 1)
        except (OSError, ValueError, KeyError):
            pass  # being written
    return sorted(held)


def test_a_member_whose_training_had_ended_finishes_from_its_files_without_the_cluster(tmp_path, monkeypatch):
    """Killed between its last epoch and its commit, while the other members committed theirs: they would never
    join a cluster again, so it must not start one."""
    import keras

    from components import train as train_module
    from components.tune import HyperParameters

    monkeypatch.setenv("TF_CONFIG", _tf_config([1, 2], 0))
    monkeypatch.setattr(train_module, "classes_of", lambda schema: tuple(str(i) for i in range(10)))
    monkeypatch.setattr("components.train_process.run", lambda *a, **k: pytest.fail("started the cluster"))
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    rows = [{"epoch": e, "accuracy": 0.5, "loss": 1.0, "val_accuracy": v, "val_loss": 1.0, "seconds": 1.0,
             "learning_rate": 0.001} for e, v in enumerate([0.6, 0.8, 0.7])]
    (work / "history.json").write_text(json.dumps(rows))
    keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]).save(work / "best.keras")
    hp = HyperParameters(uri=str(tmp_path), fingerprint="", tuner="none", values={}, trials=())
    model = train_module.train(None, None, hp, out_dir=out, train=train_module.TrainConfig(epochs=3), seed=1,
                               work_dir=work)
    assert model.plan["ended"] == "epochs" and model.plan["best_epoch"] == 2
    assert model.history["val_accuracy"] == [0.6, 0.8, 0.7] and (out / "model.keras").is_file()

    (work / "history.json").write_text(json.dumps(rows[:2]))  # an epoch left to train: the cluster it is
    monkeypatch.setattr("components.train_process.run", lambda *a, **k: "started the cluster")
    assert train_module.train(None, None, hp, out_dir=out, train=train_module.TrainConfig(epochs=3), seed=1,
                              work_dir=work) == "started the cluster"
