"""Benchmark: the model a wall-clock budget buys, the pipeline's `run --budget` against a plain KerasTuner script.

    python benchmarks/budget.py [--budget 15m] [--dataset fashion_mnist] [--root DIR] [--pipeline-only]

One after the other, in child processes on the same data: `python -m pipeline run --budget B` on a fresh
root (ingest, statistics, validation, search, training, evaluation and push, all inside B), then `PLAIN`,
the script a KerasTuner user writes: Hyperband over the project's search space with KerasTuner's defaults
(max_epochs 4), until half the budget; a 10-epoch retrain of the best with early stopping, until the budget.
It gets the pipeline's train, eval and test splits as numpy arrays before its clock starts. Prints one JSON
object: each side's test accuracy, wall seconds, trials and epochs, and `delta` = pipeline - plain; for the
pipeline also the budget used (its wall seconds, and their share of the budget), why its search and its
training ended, and the step probe's choice. `--pipeline-only` runs the pipeline's side alone (a 60m
comparison takes two hours): `plain` and `delta` are then null.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

PLAIN = r'''
import json, sys, time
start = time.time()
import numpy as np, keras, keras_tuner as kt
from components.cnn import CNNHyperModel

budget, data, work = float(sys.argv[1]), np.load(sys.argv[2]), sys.argv[3]
split = {s: (data[f"x_{s}"], keras.utils.to_categorical(data[f"y_{s}"], 10)) for s in ("train", "eval", "test")}
(x, y), validation = split["train"], split["eval"]
search_end, end = start + budget / 2, start + budget


class Deadline(keras.callbacks.Callback):
    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_train_batch_end(self, batch, logs=None):
        if time.time() >= self.at:
            self.model.stop_training = True


class TimedHyperband(kt.Hyperband):
    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        if time.time() >= search_end:
            raise TimeoutError


tuner = TimedHyperband(CNNHyperModel(), objective="val_accuracy", max_epochs=4, seed=1, directory=work)
try:
    tuner.search(x, y, validation_data=validation, batch_size=128, callbacks=[Deadline(search_end)], verbose=0)
except TimeoutError:
    pass
search_epochs = sum(len(t.metrics.get_history("val_accuracy")) for t in tuner.oracle.trials.values()
                    if t.metrics.exists("val_accuracy"))
model = tuner.hypermodel.build(tuner.get_best_hyperparameters(1)[0])
stop = keras.callbacks.EarlyStopping("val_accuracy", patience=2, restore_best_weights=True)
history = model.fit(x, y, validation_data=validation, epochs=10, batch_size=128, verbose=0,
                    callbacks=[stop, Deadline(end)]).history
accuracy = model.evaluate(*split["test"], verbose=0)[1]
print(json.dumps({"test_accuracy": round(float(accuracy), 4), "seconds": round(time.time() - start, 1),
                  "trials": len(tuner.oracle.trials), "epochs": search_epochs + len(history["loss"])}))
'''


def _pipeline(budget: float, dataset: str, root: Path) -> dict:
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", "--dataset", dataset, "--root", str(root),
                           "--budget", f"{budget}s", "--json"], cwd=PROJECT, capture_output=True, text=True)
    seconds = round(time.time() - start, 1)
    try:
        summary = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"pipeline run failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    trials = (summary.get("tuning") or {}).get("trials", [])
    plan = (summary.get("training") or {}).get("plan", {})
    tuning = summary.get("tuning") or {}
    return {"test_accuracy": (summary.get("evaluation") or {}).get("accuracy"), "seconds": seconds,
            "budget_used": {"seconds": seconds, "share": round(seconds / budget, 3)},
            "status": summary["status"], "trials": len(trials), "search_ended": tuning.get("ended"),
            "training_ended": plan.get("ended"), "speed": plan.get("speed"), "shift": plan.get("shift"),
            "epochs": sum(t.get("epochs") or 0 for t in trials) + plan.get("epochs_run", 0),
            "search_seconds": summary["components"].get("tune", {}).get("seconds"),
            "training_epochs": plan.get("epochs_run"), "best": (summary.get("tuning") or {}).get("best_hyperparameters"),
            "components": {k: v["seconds"] for k, v in summary["components"].items()}}


def _arrays(dataset: str, root: Path, path: Path) -> None:
    """The pipeline's train, eval and test splits as the plain script's numpy arrays."""
    import numpy as np

    from benchmarks._examples import examples_for
    from components.inputs import split_arrays

    examples = examples_for(dataset, str(root))
    arrays = {}
    for split in ("train", "eval", "test"):
        arrays[f"x_{split}"], arrays[f"y_{split}"] = split_arrays(examples.file_pattern(split))
    np.savez(path, **arrays)


def _plain(budget: float, data: Path, work: Path) -> dict:
    script = work / "plain.py"
    script.write_text(PLAIN)
    done = subprocess.run([sys.executable, str(script), str(budget), str(data), str(work / "tuner")],
                          cwd=PROJECT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(PROJECT)})
    if done.returncode != 0:
        raise SystemExit(f"plain script failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="15m", help="wall clock for each side (default: 15m)")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--root", help="the pipeline's root (default: a fresh temporary directory)")
    parser.add_argument("--pipeline-only", action="store_true", help="run the pipeline's side alone")
    args = parser.parse_args()
    from pipeline.config import parse_duration

    budget = parse_duration(args.budget)
    with tempfile.TemporaryDirectory(prefix="budget-") as tmp:
        root = Path(args.root) if args.root else Path(tmp) / "root"
        pipeline, plain = _pipeline(budget, args.dataset, root), None
        if not args.pipeline_only:
            _arrays(args.dataset, root, Path(tmp) / "data.npz")
            plain = _plain(budget, Path(tmp) / "data.npz", Path(tmp))
    delta = None
    if pipeline["test_accuracy"] is not None and plain is not None:
        delta = round(pipeline["test_accuracy"] - plain["test_accuracy"], 4)
    print(json.dumps({"budget_seconds": budget, "dataset": args.dataset, "cores": os.cpu_count(),
                      "pipeline": pipeline, "plain": plain, "delta": delta}, indent=2))


if __name__ == "__main__":
    main()
