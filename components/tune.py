"""Tune: a KerasTuner search over the CNN space; its first trial is always the reference model."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from pathlib import Path

from pipeline.artifacts import Examples, HyperParameters, Schema
from pipeline.config import TuneConfig
from pipeline.errors import ConfigError
from pipeline.runner import Component

log = logging.getLogger("pipeline")
TUNERS = ("hyperband", "bayesian", "random")
OBJECTIVE = "val_accuracy"


def _oracle(name: str, max_trials: int, max_epochs: int, seed: int, deadline: float | None):
    import keras_tuner as kt

    bases = {"hyperband": kt.oracles.HyperbandOracle, "bayesian": kt.oracles.BayesianOptimizationOracle,
             "random": kt.oracles.RandomSearchOracle}
    if name not in bases:
        raise ConfigError(f"tune.tuner '{name}': expected one of {', '.join(TUNERS)}")

    class ReferenceFirst(bases[name]):
        """Starts from the hyperparameter defaults (the reference model), so the search never does worse."""

        def populate_space(self, trial_id):
            if deadline is not None and time.monotonic() >= deadline:
                return {"status": "STOPPED", "values": None}  # the budget is spent: keep the best so far
            return super().populate_space(trial_id)

        def _random_values(self):
            if not self.trials:
                hps = self.hyperparameters
                return {hp.name: hps.values[hp.name] for hp in hps.space if hps.is_active(hp)}
            return super()._random_values()

    objective = kt.Objective(OBJECTIVE, "max")
    if name == "hyperband":
        # Hyperband has no trial cap of its own: its iterations run unbounded and max_trials ends them.
        oracle = ReferenceFirst(objective=objective, max_epochs=max_epochs, factor=3, seed=seed,
                                hyperband_iterations=None)
        oracle.max_trials = max_trials
        return oracle
    return ReferenceFirst(objective=objective, max_trials=max_trials, seed=seed)


def _tuner(name: str, oracle, directory: Path):
    import keras_tuner as kt

    from components.cnn import CNNHyperModel

    base = {"hyperband": kt.Hyperband, "bayesian": kt.BayesianOptimization, "random": kt.RandomSearch}[name]

    class Logged(base):
        def on_trial_begin(self, trial):
            super().on_trial_begin(trial)
            self.seconds[trial.trial_id] = time.monotonic()

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            self.seconds[trial.trial_id] = round(time.monotonic() - self.seconds[trial.trial_id], 2)
            score = self.oracle.trials[trial.trial_id].score
            log.info("  trial %s %s%s (%.1fs)", trial.trial_id, trial.status.lower(),
                     f" {OBJECTIVE}={score:.4f}" if score is not None else "", self.seconds[trial.trial_id])

    # These tuners' constructors only build their stock oracle; ours is passed to the base Tuner instead.
    tuner = Logged.__new__(Logged)
    tuner.seconds = {}  # trial id: start time while it runs, then its duration
    kt.Tuner.__init__(tuner, oracle=oracle, hypermodel=CNNHyperModel(), directory=str(directory),
                      project_name="search", overwrite=True)
    return tuner


def _trials_table(tuner) -> tuple[dict, ...]:
    rows = []
    for trial in tuner.oracle.trials.values():
        score = trial.score if trial.score is not None and not math.isnan(trial.score) else None
        history = trial.metrics.get_history(OBJECTIVE) if trial.metrics.exists(OBJECTIVE) else []
        rows.append({"trial_id": trial.trial_id, "status": trial.status, "score": score,
                     "epochs": trial.hyperparameters.values.get("tuner/epochs") or len(history) or None,
                     "seconds": tuner.seconds.get(trial.trial_id),
                     "hyperparameters": {k: v for k, v in trial.hyperparameters.values.items()
                                         if not k.startswith("tuner/")}})
    return tuple(rows)


def search_key(schema: Schema, tune: TuneConfig, batch_size: int, seed: int) -> str:
    """What makes a search's result reusable: the schema's content, the search space and settings."""
    from components.cnn import SPACE_VERSION

    settings = {k: v for k, v in dataclasses.asdict(tune).items() if k not in ("budget_seconds", "retune")}
    blob = json.dumps([schema.fingerprint, SPACE_VERSION, settings, batch_size, seed], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _Deadline(deadline: float):
    """A Keras callback ending the trial in flight at the budget's deadline, after the current batch."""
    import keras

    class Deadline(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if time.monotonic() >= deadline:
                self.model.stop_training = True

    return Deadline()


def tune(examples: Examples, schema: Schema, *, out_dir: Path, tune: TuneConfig, batch_size: int,
         seed: int) -> HyperParameters:
    """Searches the CNN space on the train split, scoring trials by eval-split accuracy.

    With `tune.enabled` false, no search runs and the reference hyperparameters are returned. With
    `tune.budget_seconds`, no trial starts after the budget and the trial in flight stops at it; the
    best trial so far is kept (the first trial, the reference model, always has a score).

    Example:
        >>> hp = tune(examples, schema, out_dir=Path("/tmp/hp"), tune=TuneConfig(max_trials=2),
        ...           batch_size=128, seed=42)
        >>> hp.values["conv_blocks"]
        2
    """
    from components.cnn import REFERENCE

    if not tune.enabled:
        return HyperParameters(uri=str(out_dir), fingerprint="", tuner="none", values=dict(REFERENCE), trials=())
    import keras

    from components.inputs import make_dataset

    keras.utils.set_random_seed(seed)
    train = make_dataset(examples.file_pattern("train"), batch_size, shuffle=True, seed=seed,
                         shuffle_buffer=max(1, examples.counts["train"]))
    evaluation = make_dataset(examples.file_pattern("eval"), batch_size)
    deadline = time.monotonic() + tune.budget_seconds if tune.budget_seconds else None
    oracle = _oracle(tune.tuner, tune.max_trials, tune.max_epochs, seed, deadline)
    tuner = _tuner(tune.tuner, oracle, out_dir / "tuner")
    callbacks = [keras.callbacks.EarlyStopping(monitor=OBJECTIVE, patience=1)]
    if deadline is not None:
        callbacks.append(_Deadline(deadline))
    tuner.search(train, validation_data=evaluation, epochs=tune.max_epochs, callbacks=callbacks, verbose=0)
    trials = _trials_table(tuner)
    best = {k: v for k, v in tuner.get_best_hyperparameters(1)[0].values.items() if not k.startswith("tuner/")}
    return HyperParameters(uri=str(out_dir), fingerprint="", tuner=tune.tuner, values=best, trials=trials,
                           search=search_key(schema, tune, batch_size, seed))


COMPONENT = Component(name="tune", fn=tune, inputs=(Examples, Schema), output=HyperParameters, version="3")
