"""Tests of the step probe (steps per call, bfloat16) and of a bfloat16 model kept computing in float32."""
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from components import budget, checkpoint, inputs, speed
from components.cnn import REFERENCE, build_model, in_float32
from components.train import TrainConfig, train
from components.tune import HyperParameters
from engine.failpoints import ENV

REFERENCE_HP = HyperParameters(uri="", fingerprint="x", tuner="none", values=dict(REFERENCE), trials=())


def test_the_probe_compares_steps_per_call_and_bfloat16_where_the_cpu_has_it(monkeypatch):
    monkeypatch.setattr(speed, "bfloat16_native", lambda: True)
    names = [(c["precision"], c["steps_per_execution"]) for c in speed.candidates(gpu=False)]
    assert names == [("float32", 1), ("float32", 16), ("mixed_bfloat16", 1), ("mixed_bfloat16", 16)]
    assert speed.candidates(gpu=True) == [speed.PLAIN, {**speed.PLAIN, "steps_per_execution": 16}]
    assert speed.candidates(gpu=False, mixed_precision="off") == speed.candidates(gpu=True)  # float32 asked for
    monkeypatch.setattr(speed, "bfloat16_native", lambda: False)
    assert all(c["precision"] == "float32" for c in speed.candidates(gpu=False))


def test_a_setting_is_chosen_only_when_clearly_faster_than_the_plain_one():
    settings = speed.candidates(gpu=False)
    step_ms = {speed._name(s): 10.0 for s in settings}
    assert speed.choose(settings, {**step_ms, "float32/spe16": 9.6}) == speed.PLAIN  # within 5%: noise
    assert speed.choose(settings, {**step_ms, "float32/spe16": 6.0})["steps_per_execution"] == 16


def test_a_model_trained_in_bfloat16_is_kept_computing_in_float32():
    mixed = build_model(REFERENCE, mixed_precision="mixed_bfloat16", steps_per_execution=16)
    assert mixed.get_layer("conv_1").compute_dtype == "bfloat16"
    plain = in_float32(mixed, REFERENCE, 10)
    assert {layer.compute_dtype for layer in plain.layers} == {"float32"}
    assert all(np.array_equal(a, b) for a, b in zip(plain.get_weights(), mixed.get_weights()))
    images = np.random.default_rng(0).integers(0, 256, (8, 784), dtype=np.uint8)
    assert np.allclose(plain.predict(images, verbose=0), mixed.predict(images, verbose=0), atol=0.05)
    assert in_float32(plain, REFERENCE, 10) is plain


def test_budgeted_training_probes_its_step_and_records_the_choice(examples, generic_schema, tmp_path, seed,
                                                                   monkeypatch):
    import keras

    monkeypatch.setattr(speed, "bfloat16_native", lambda: True)
    monkeypatch.setattr(speed, "choose", lambda settings, step_ms: settings[-1])  # bfloat16, 16 steps a call
    monkeypatch.setattr(speed, "WARMUP", 16)
    monkeypatch.setattr(speed, "TIMED", 16)
    monkeypatch.setattr(speed, "PAYS_BACK", 0)  # 2 epochs of tiny data are fewer steps than a probe pays back
    shifts, made = [], inputs.make_dataset
    monkeypatch.setattr(inputs, "make_dataset", lambda *a, **k: shifts.append(k.get("shift", 0)) or made(*a, **k))
    model = train(examples, generic_schema, REFERENCE_HP, out_dir=tmp_path, seed=seed, budget=3600.0,
                  deadline=time.time() + 3600, train=TrainConfig(epochs=2, batch_size=64, schedule="cosine"))
    probed = model.plan["speed"]
    assert probed["chosen"] == {"precision": "mixed_bfloat16", "steps_per_execution": 16}
    assert set(probed["step_ms"]) == {"float32/spe1", "float32/spe16", "mixed_bfloat16/spe1",
                                      "mixed_bfloat16/spe16"} and all(v > 0 for v in probed["step_ms"].values())
    kept = keras.models.load_model(model.path)
    assert {layer.compute_dtype for layer in kept.layers} == {"float32"}  # evaluated and served in float32
    # An hour of these tiny epochs is many passes: the images are moved (train.shift unset).
    assert model.plan["shift"] == budget.AUTO_SHIFT and probed["at"] <= time.time()
    assert shifts == [0, 0, budget.AUTO_SHIFT]  # probed on the train split as it is, trained on it moved
    # Without a budget nothing is probed: the user's recipe runs as configured.
    plain = train(examples, generic_schema, REFERENCE_HP, out_dir=tmp_path / "plain", seed=seed,
                  train=TrainConfig(epochs=1, batch_size=64))
    assert plain.plan["speed"] is None and plain.plan["shift"] == 0
    # Nor is a training too short to pay a probe back.
    monkeypatch.setattr(speed, "PAYS_BACK", 10)
    short = train(examples, generic_schema, REFERENCE_HP, out_dir=tmp_path / "short", seed=seed, budget=3600.0,
                  deadline=time.time() + 3600, train=TrainConfig(epochs=1, batch_size=64, schedule="cosine"))
    assert short.plan["speed"] is None


def test_budgeted_training_ends_where_the_search_curves_flatten(examples, generic_schema, tmp_path, seed):
    flat = {"trial_id": "00", "status": "COMPLETED", "score": 0.9, "curve": [[0, 0.9], [1, 0.9], [2, 0.9]],
            "epoch_seconds": 1.0}
    searched = HyperParameters(uri="", fingerprint="x", tuner="hyperband", values=dict(REFERENCE), trials=(flat,),
                               fraction=0.25, examples=examples.fingerprint)
    model = train(examples, generic_schema, searched, out_dir=tmp_path, seed=seed, budget=3600.0,
                  deadline=time.time() + 3600, train=TrainConfig(epochs=10_000, batch_size=64, schedule="cosine"))
    assert (model.plan["ended"], model.plan["epochs_run"], model.plan["plateau_epochs"]) == ("plateau", 1, 1)
    # A search reused from other examples: its curves describe other data and set no plateau.
    reused = dataclasses.replace(searched, examples="other")
    model = train(examples, generic_schema, reused, out_dir=tmp_path / "reused", seed=seed, budget=3600.0,
                  deadline=time.time() + 3600, train=TrainConfig(epochs=2, batch_size=64, schedule="cosine"))
    assert (model.plan["ended"], model.plan["epochs_run"], model.plan["plateau_epochs"]) == ("epochs", 2, None)


def test_a_resumed_training_keeps_the_setting_it_was_probed_with(tmp_path, monkeypatch):
    runs = []
    chosen = {"precision": "mixed_bfloat16", "steps_per_execution": 16}
    monkeypatch.setattr(speed, "probe", lambda build, data, settings: runs.append(1) or
                        {"chosen": chosen, "step_ms": {}, "probe_seconds": 1.0})
    saved = tmp_path / "work" / speed.SAVED
    first = speed.fastest_step(None, REFERENCE, 10, steps=10**6, saved=saved)
    # After a kill the machine may measure otherwise; the epochs backed up were trained with the first choice.
    monkeypatch.setattr(speed, "probe", lambda build, data, settings: runs.append(1) or {"chosen": speed.PLAIN})
    again = speed.fastest_step(None, REFERENCE, 10, steps=10**6, saved=saved)
    assert first == again and again["chosen"] == chosen and len(runs) == 1
    assert speed.fastest_step(None, REFERENCE, 10, steps=10, saved=tmp_path / "short.json") is None
    assert not (tmp_path / "short.json").exists() and len(runs) == 1


# Run as a script by the test below: trains under an hour's budget, with the probe's settings of the test above.
KILLED_SCRIPT = """
import json, os, sys
from components import speed
from components.cnn import REFERENCE
from components.ingest import Examples
from components.schema import Schema
from components.train import TrainConfig, train
from components.tune import HyperParameters

speed.bfloat16_native = lambda: True
speed.choose = lambda settings, step_ms: settings[-1]
speed.WARMUP = speed.TIMED = 16
speed.PAYS_BACK = 0
if sys.argv[1] == "again":  # the saved probe must be used: probing again would be another choice
    def probe(*args, **kwargs):
        raise AssertionError("probed again")
    speed.probe = probe
given = json.loads(sys.argv[2])
os.makedirs(given["out"], exist_ok=True)
model = train(Examples.from_dict(given["examples"]), Schema.from_dict(given["schema"]),
              HyperParameters(uri="", fingerprint="x", tuner="none", values=dict(REFERENCE), trials=()),
              out_dir=given["out"], work_dir=given["work"], seed=0, budget=3600.0, deadline=given["deadline"],
              train=TrainConfig(epochs=2, batch_size=64, schedule="cosine"))
print(json.dumps(model.plan))
"""


@pytest.mark.slow
def test_a_training_killed_between_its_probe_and_its_first_backup_resumes_with_the_probes_choice(
        examples, generic_schema, tmp_path):
    script = tmp_path / "train_once.py"
    script.write_text(KILLED_SCRIPT)
    given = json.dumps({"examples": examples.to_dict(), "schema": generic_schema.to_dict(),
                        "out": str(tmp_path / "out"), "work": str(tmp_path / "work"), "deadline": time.time() + 3600})
    repo = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": repo, ENV: "train.epoch_begin#1=SIGKILL"}  # probed, no epoch backed up
    killed = subprocess.run([sys.executable, str(script), "first", given], env=env, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    saved = json.loads((tmp_path / "work" / speed.SAVED).read_text())
    assert not (tmp_path / "work" / checkpoint.NAME).exists()
    env.pop(ENV)
    again = subprocess.run([sys.executable, str(script), "again", given], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    plan = json.loads(again.stdout.strip().splitlines()[-1])
    # The same setting and the same shift as the killed process chose, from its saved probe.
    assert plan["speed"] == saved and plan["shift"] == budget.AUTO_SHIFT and plan["epochs_run"] == 2
