"""Tests of tune: the search space holds the reference model, trial caps, every tuner writes its best."""
import time

import keras
import keras_tuner as kt
import pytest

from components.cnn import REFERENCE, CNNHyperModel, build_model
from components.tune import tune
from components.tune import TuneConfig
from engine.errors import ConfigError



def test_default_hyperparameters_build_the_reference_model():
    model = CNNHyperModel().build(kt.HyperParameters())
    layers = [(type(l).__name__, getattr(l, "filters", None) or getattr(l, "units", None) or getattr(l, "rate", None))
              for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    assert layers == [("Rescaling", None), ("Reshape", None), ("Conv2D", 32), ("MaxPooling2D", None),
                      ("Dropout", 0.2), ("Conv2D", 64), ("MaxPooling2D", None), ("Dropout", 0.2),
                      ("Flatten", None), ("Dense", 128), ("Dropout", 0.5), ("Dense", 10)]
    assert [l.kernel_size for l in model.layers if isinstance(l, keras.layers.Conv2D)] == [(3, 3), (3, 3)]
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    assert model.loss == "categorical_crossentropy"
    assert model.count_params() == build_model(REFERENCE).count_params() == 225_034


@pytest.mark.parametrize("values", [{"conv_blocks": 3, "kernel_size": 5, "batch_norm": True},
                                    {"conv_blocks": 1, "filters_1": 16}])
def test_space_corners_build(values):
    model = build_model({**REFERENCE, **values})
    assert model.output_shape == (None, 10)


@pytest.mark.parametrize("tuner", ["hyperband", "random", "bayesian"])
def test_search_is_capped_starts_from_reference_and_writes_best(examples, generic_schema, tmp_path, seed, tuner):
    result = tune(examples, generic_schema, out_dir=tmp_path, tune=TuneConfig(tuner=tuner, max_trials=2, max_epochs=1),
                  batch_size=32, seed=seed)
    assert result.tuner == tuner and len(result.trials) == 2
    assert result.trials[0]["hyperparameters"] == {k: v for k, v in REFERENCE.items()}
    assert all(t["status"] == "COMPLETED" and 0 <= t["score"] <= 1 for t in result.trials)
    best = max(result.trials, key=lambda t: t["score"])
    assert result.values == best["hyperparameters"]


def test_disabled_tuning_returns_the_reference(examples, generic_schema, tmp_path, seed):
    result = tune(examples, generic_schema, out_dir=tmp_path, tune=TuneConfig(enabled=False), batch_size=32, seed=seed)
    assert (result.tuner, result.values, result.trials) == ("none", REFERENCE, ())


def test_unknown_tuner(examples, generic_schema, tmp_path, seed):
    with pytest.raises(ConfigError, match=r"tune.tuner 'grid': expected one of hyperband, bayesian, random"):
        tune(examples, generic_schema, out_dir=tmp_path, tune=TuneConfig(tuner="grid"), batch_size=32, seed=seed)


def test_budget_ends_the_search_and_keeps_the_best(examples, generic_schema, tmp_path, seed):
    result = tune(examples, generic_schema, out_dir=tmp_path, batch_size=32, seed=seed,
                  tune=TuneConfig(tuner="random", max_trials=6, max_epochs=3, budget_seconds=0.5))
    assert 1 <= len(result.trials) < 6  # the first trial alone outlasts half a second
    # The trial in flight at the deadline stopped there, within its first epoch of three.
    assert result.trials[-1]["epochs"] < 3 and all(t["status"] == "COMPLETED" for t in result.trials)
    assert result.trials[0]["hyperparameters"] == REFERENCE and result.trials[0]["score"] is not None
    assert all(t["seconds"] > 0 and t["epochs"] >= 1 for t in result.trials)
    assert result.values == max(result.trials, key=lambda t: t["score"] or -1)["hyperparameters"]


@pytest.mark.slow
def test_trials_run_in_their_own_processes_so_memory_stays_flat(examples, generic_schema, tmp_path, seed):
    result = tune(examples, generic_schema, out_dir=tmp_path, batch_size=32, seed=seed,
                  tune=TuneConfig(tuner="random", max_trials=5, max_epochs=1))
    tuner_memory = [t["memory_mb"] for t in result.trials]
    # In one process TensorFlow keeps 5-15 MB per fit; here the tuner's memory must not grow. It may fall (CI saw
    # 1102 MB after the first trial, then 1055 MB after each of the others, when the allocator gave memory back).
    assert len(tuner_memory) == 5 and max(tuner_memory) - tuner_memory[0] < 3, tuner_memory
    assert all(t["peak_mb"] > 100 for t in result.trials)  # the trial processes did the training


@pytest.mark.slow
def test_killed_search_resumes_with_its_finished_trials(examples, generic_schema, tmp_path, seed):
    import json
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from conftest import start_held

    work = tmp_path / "work"
    script = (
        "import json, sys; from pathlib import Path\n"
        "from components.tune import tune; from components.ingest import Examples; from components.schema import Schema\n"
        "from components.tune import TuneConfig\n"
        f"ex = Examples.from_dict({{k: v for k, v in json.loads({json.dumps(json.dumps(examples.to_dict()))}).items()"
        " if k != 'type'})\n"
        f"tune(ex, Schema(uri={generic_schema.uri!r}, fingerprint='s', source='generic'), out_dir=Path({str(tmp_path)!r}),"
        f" work_dir=Path({str(work)!r}), tune=TuneConfig(tuner='random', max_trials=4, max_epochs=1),"
        f" batch_size=32, seed={seed})\n")

    def completed() -> dict:
        found = {}
        for path in (work / "search").glob("trial_*/trial.json"):
            trial = json.loads(path.read_text())
            if trial["status"] == "COMPLETED":
                found[trial["trial_id"]] = trial["score"]
        return found

    def orphans() -> list[str]:
        found = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                text = cmdline.read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "components.trial" in text and str(work) in text:
                found.append(text)
        return found

    quiet = {"start_new_session": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    # Killed as the second trial ends: two trials are saved as completed, two are to come.
    proc = start_held([sys.executable, "-c", script], "tune.trial_end#2", tmp_path / "reached", **quiet)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = completed()
    assert len(before) == 2

    def written() -> dict:  # what only a trial's own process writes: its best weights
        return {p.parent.name: p.stat().st_mtime_ns for p in (work / "search").glob("trial_*/checkpoint*")}

    checkpoints = written()
    assert {f"trial_{t}" for t in before} <= set(checkpoints)
    # Resumed, then killed (the search only) while the next trial's process trains: the trial dies with it.
    proc = start_held([sys.executable, "-c", script], "trial.start", tmp_path / "reached", **quiet)
    assert orphans()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(200):  # the kernel delivers the parent-death signal as the search exits
        if not orphans():
            break
        time.sleep(0.05)
    assert orphans() == [] and completed() == before

    result = tune(examples, generic_schema, out_dir=tmp_path, work_dir=work, batch_size=32, seed=seed,
                  tune=TuneConfig(tuner="random", max_trials=4, max_epochs=1))
    assert len(result.trials) == 4 and all(t["status"] == "COMPLETED" for t in result.trials)
    scores = {t["trial_id"]: t["score"] for t in result.trials}
    assert all(scores[trial_id] == score for trial_id, score in before.items())
    after = written()  # kept, not re-run: their weights were not written again
    assert all(after[f"trial_{t}"] == checkpoints[f"trial_{t}"] for t in before)
    reports = [json.loads(p.read_text()) for p in work.rglob("process/progress.json")]  # for the trial bars
    assert reports and all(r["steps"] > 0 and 1 <= r["step"] <= r["steps"] for r in reports)
    assert result.trials[0]["hyperparameters"] == REFERENCE


def test_final_training_starts_from_the_best_trials_weights(examples, generic_schema, tmp_path, seed):
    import dataclasses

    from components.inputs import make_dataset
    from components.train import train, warm_start_weights
    from components.train import TrainConfig

    hp = tune(examples, generic_schema, out_dir=tmp_path / "hp", batch_size=32, seed=seed,
              tune=TuneConfig(tuner="random", max_trials=2, max_epochs=2))
    from components import checkpoint

    assert (hp.weights, hp.weights_examples, hp.examples) == ("best.weights.npz",) + (examples.fingerprint,) * 2
    model = build_model(hp.values)
    checkpoint.load_weights(model, tmp_path / "hp" / hp.weights)
    scored = model.evaluate(make_dataset(examples.file_pattern("eval"), 32), verbose=0, return_dict=True)
    assert scored["accuracy"] == pytest.approx(max(t["score"] for t in hp.trials), abs=1e-6)
    other = dataclasses.replace(examples, fingerprint="other data")  # a search reused from another span
    assert warm_start_weights(hp, examples) and warm_start_weights(hp, other) is None
    trained = train(examples, generic_schema, hp, out_dir=tmp_path / "model", seed=seed,
                    train=TrainConfig(epochs=1, batch_size=32))
    cold = train(examples, generic_schema, hp, out_dir=tmp_path / "cold", seed=seed,
                 train=TrainConfig(epochs=1, batch_size=32, warm_start=False))
    assert trained.plan["warm_start"] and not cold.plan["warm_start"]


def test_trials_can_train_on_a_subset_of_the_train_split(examples, generic_schema, tmp_path, seed):
    from components.inputs import make_dataset

    assert sum(len(x) for x, _ in make_dataset(examples.file_pattern("train"), 16, limit=40)) == 40
    result = tune(examples, generic_schema, out_dir=tmp_path, batch_size=32, seed=seed,
                  tune=TuneConfig(tuner="random", max_trials=1, max_epochs=1, train_fraction=0.5))
    assert [t["train_examples"] for t in result.trials] == [round(examples.counts["train"] / 2)]
    with pytest.raises(ConfigError, match=r"config 'tune.train_fraction': expected a number more than 0 and at most 1, got 1.5"):
        from pipeline.config import Config, override

        override(Config(), **{"tune.train_fraction": 1.5})


def test_no_trial_starts_that_its_pace_says_would_not_finish(seed):
    from components.tune import _oracle

    oracle = _oracle("random", max_trials=5, max_epochs=2, seed=seed, budget=100.0)
    oracle.info = {"00": {"seconds": 80.0, "epochs": 1}}  # a finished trial: 80 s an epoch
    assert oracle.populate_space("01")["status"] == "STOPPED"  # 2 epochs need 160 s, 100 are left
    oracle.info = {"00": {"seconds": 10.0, "epochs": 1}}
    assert oracle.populate_space("01")["status"] == "RUNNING"
    ends_sooner = _oracle("random", max_trials=5, max_epochs=2, seed=seed, budget=100.0, end=time.time() + 15)
    ends_sooner.info = {"00": {"seconds": 10.0, "epochs": 1}}
    assert ends_sooner.populate_space("01")["status"] == "STOPPED"  # the run's budget leaves it 15 s
