"""Tests of train in fresh processes: resuming after kill -9, the multi-device and mixed-precision paths on CPU,
and determinism."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import start_held

PROBE = Path(__file__).with_name("train_probe.py")


@pytest.fixture
def examples_json(examples, tmp_path) -> Path:
    path = tmp_path / "examples.json"
    path.write_text(json.dumps(examples.to_dict()))
    return path


def probe(examples_json: Path, out: Path, work: Path | str, train: dict, *flags: str, timeout: int = 300) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, str(PROBE), str(examples_json), str(out), str(work), json.dumps(train),
                           *flags], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_killed_training_resumes_from_its_last_finished_epoch(examples_json, tmp_path):
    work, train = tmp_path / "work", {"epochs": 5, "patience": 10, "batch_size": 64}
    (tmp_path / "out1").mkdir()
    # Held as epoch 3 begins, when epochs 1 and 2 are backed up, then killed there.
    proc = start_held([sys.executable, str(PROBE), str(examples_json), str(tmp_path / "out1"), str(work),
                       json.dumps(train)], "train.epoch_begin#3", tmp_path / "reached",
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    history = work / "history.json"
    with np.load(work / "backup.npz") as backup:
        done = int(backup["epoch"]) + 1  # epochs finished
    before = json.loads(history.read_text())
    assert done == 2 and [r["epoch"] for r in before] == [0, 1]

    result = probe(examples_json, tmp_path / "out2", work, train)
    after = json.loads(history.read_text())
    assert [r["epoch"] for r in after] == [0, 1, 2, 3, 4]
    # Finished epochs are kept as they were, not re-run: same scores, same timings.
    assert after[:done] == before
    assert result["history"]["val_accuracy"] == [r["val_accuracy"] for r in after]


def test_mirrored_strategy_over_two_cpus_with_mixed_precision(examples_json, tmp_path):
    result = probe(examples_json, tmp_path / "out", "-",
                   {"epochs": 2, "batch_size": 16, "distribute": "mirrored", "mixed_precision": "on"},
                   "--cpus", "2")
    assert result["replicas"] == 2
    assert result["compute_dtype"] == "float16" and result["output_dtype"] == "float32"
    assert len(result["history"]["val_accuracy"]) == 2 and all(v == v for v in result["history"]["loss"])  # no NaN


def test_auto_settings_use_one_device_and_float32_without_a_gpu(examples_json, tmp_path):
    result = probe(examples_json, tmp_path / "out", "-", {"epochs": 1, "batch_size": 64}, "--cpus", "2")
    assert result["replicas"] == 1 and result["compute_dtype"] == "float32"


def test_deterministic_training_repeats_to_the_bit(examples_json, tmp_path):
    train = {"epochs": 2, "batch_size": 64, "deterministic": True}
    first = probe(examples_json, tmp_path / "a", "-", train)
    second = probe(examples_json, tmp_path / "b", "-", train)
    assert first["weights_sha256"] == second["weights_sha256"] and first["history"] == second["history"]
    # The control: the digest tells models apart, so equal digests above mean equal weights.
    other = probe(examples_json, tmp_path / "c", "-", train, "--seed", "8")
    assert other["weights_sha256"] != first["weights_sha256"]


@pytest.mark.slow
def test_deterministic_runs_repeat_their_trials_and_model_through_the_cli(tmp_path):
    import numpy as np
    from conftest import write_dataset
    from test_cli import FAST, cli

    data = write_dataset(tmp_path / "data", {"train": 200, "t10k": 60})
    runs = []
    for root in ("a", "b"):
        code, out, err = cli("run", "--dataset", f"idx:{data}", "--root", tmp_path / root, "--deterministic", *FAST,
                             "--min-accuracy", "0", "--json")
        assert code == 0, err
        runs.append(json.loads(out))
    a, b = runs
    timing = ("seconds", "epoch_seconds", "memory_mb", "peak_mb")
    trials = [[{k: v for k, v in t.items() if k not in timing} for t in r["tuning"]["trials"]] for r in runs]
    assert len(trials[0]) == 2 and trials[0] == trials[1]
    assert all(t["deterministic"] is True for t in trials[0])  # the flag reached the trial processes
    assert a["tuning"]["best_hyperparameters"] == b["tuning"]["best_hyperparameters"]
    assert a["training"]["history"] == b["training"]["history"] and a["evaluation"]["loss"] == b["evaluation"]["loss"]
    import keras

    weights = [keras.models.load_model(Path(r["pushed_model"]) / "model.keras").get_weights() for r in runs]
    assert all(np.array_equal(x, y) for x, y in zip(*weights))


def test_prefetch_to_device_feeds_training(examples, tmp_path):
    from components.cnn import REFERENCE, build_model
    from components.inputs import make_dataset

    data = make_dataset(examples.file_pattern("train"), 64, shuffle=True, seed=1, device="/cpu:0")
    model = build_model(REFERENCE)
    history = model.fit(data, epochs=1, verbose=0).history
    assert len(history["loss"]) == 1 and history["loss"][0] > 0
