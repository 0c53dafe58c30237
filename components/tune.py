"""Tune: a KerasTuner search over the CNN space; its first trial is always the reference model."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from components.budget import SEARCH_SUBSET, fastest_of_the_best, search_seconds
from components.ingest import Examples
from components.schema import Schema
from components.search import OBJECTIVE, trials_table, tuner_for, weights_of
from pipeline.config import TUNERS, TrainConfig, TuneConfig
from engine import history
from engine.artifacts import Artifact
from engine.component import Component
from engine.errors import ConfigError

log = logging.getLogger("pipeline")
WEIGHTS = "best.weights.npz"  # the best trial's weights, in the output (components.checkpoint)


@dataclass(frozen=True)
class HyperParameters(Artifact):
    """The best hyperparameters of a search and the table of its trials."""

    tuner: str
    values: dict[str, Any]
    trials: tuple[dict[str, Any], ...]
    search: str = ""  # fingerprint of the schema, search space and search settings: equal means reusable
    allotted: float | None = None  # seconds the search was given (0: none, under a budget); None: no limit
    weights: str = ""  # the best trial's weights, a file in uri, trained on the train split of...
    weights_examples: str = ""  # ...the Examples with this fingerprint
    kind: ClassVar[str] = "HyperParameters"


def distributed_role() -> str | None:
    """`chief` or `worker` under KerasTuner's distributed mode (KERASTUNER_* variables), else None."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    missing = [v for v in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if not os.environ.get(v)]
    if missing:
        raise ConfigError(f"KERASTUNER_ORACLE_IP is set but {' and '.join(missing)} not: distributed tuning needs "
                          "KERASTUNER_TUNER_ID (chief, or a worker name) and KERASTUNER_ORACLE_PORT")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def _oracle(name: str, max_trials: int, max_epochs: int, seed: int, budget: float | None, end: float | None = None):
    import keras_tuner as kt

    bases = {"hyperband": kt.oracles.HyperbandOracle, "bayesian": kt.oracles.BayesianOptimizationOracle,
             "random": kt.oracles.RandomSearchOracle}
    if name not in bases:
        raise ConfigError(f"tune.tuner '{name}': expected one of {', '.join(TUNERS)}")

    class ReferenceFirst(bases[name]):
        """Starts from the hyperparameter defaults (the reference model), so the search never does worse.

        It also records which tuner ran each trial and for how long, and when the search started; all
        are part of the oracle's saved state, so a resumed search keeps its budget and its table.
        """

        started: float
        info: dict

        @property
        def deadline(self) -> float | None:
            """The search's end: `budget` seconds after it first started (a resumed search keeps its start), or
            `end`, the whole-build budget's share for it, whichever comes first."""
            ends = [t for t in (self.started + budget if budget else None, end) if t is not None]
            return min(ends) if ends else None

        def populate_space(self, trial_id):
            # The budget is spent, or the next trial would not finish in it: keep the best so far. The first
            # trial (the reference) always runs, so there is a best however slowly the search started.
            if self.deadline is not None and time.time() >= self.deadline and self.trials:
                return {"status": "STOPPED", "values": None}
            proposal = super().populate_space(trial_id)
            values = proposal.get("values") or {}
            epochs = values.get("tuner/epochs", max_epochs) - values.get("tuner/initial_epoch", 0)
            pace = self.epoch_seconds()
            if self.deadline is not None and pace and time.time() + pace * epochs > self.deadline:
                return {"status": "STOPPED", "values": None}
            return proposal

        def epoch_seconds(self) -> float | None:
            """Seconds per epoch of the trials finished so far (process start included), or None."""
            done = [r for r in self.info.values() if r.get("seconds") and r.get("epochs")]
            return sum(r["seconds"] for r in done) / sum(r["epochs"] for r in done) if done else None

        def _random_values(self):
            if not self.trials:
                hps = self.hyperparameters
                return {hp.name: hps.values[hp.name] for hp in hps.space if hps.is_active(hp)}
            return super()._random_values()

        def create_trial(self, tuner_id):
            trial = super().create_trial(tuner_id)
            if trial.status == "RUNNING":
                self.info[trial.trial_id] = {"tuner": tuner_id, "start": time.time()}
            return trial

        def end_trial(self, trial):
            record = self.info.setdefault(trial.trial_id, {})
            if "start" in record:
                record["seconds"] = round(time.time() - record["start"], 2)
            if trial.metrics.exists("epochs_run"):
                record["epochs"] = int(trial.metrics.get_history("epochs_run")[-1].value[0])
            super().end_trial(trial)

        def get_state(self):
            return {**super().get_state(), "search_started": self.started, "trial_info": self.info}

        def set_state(self, state):
            super().set_state(state)
            self.started, self.info = state.get("search_started", self.started), state.get("trial_info", {})

    objective = kt.Objective(OBJECTIVE, "max")
    if name == "hyperband":
        # Hyperband has no trial cap of its own: its iterations run unbounded and max_trials ends them.
        oracle = ReferenceFirst(objective=objective, max_epochs=max_epochs, factor=3, seed=seed,
                                hyperband_iterations=None)
        oracle.max_trials = max_trials
    else:
        oracle = ReferenceFirst(objective=objective, max_trials=max_trials, seed=seed)
    oracle.started, oracle.info = time.time(), {}
    return oracle


def search_key(schema: Schema, tune: TuneConfig, batch_size: int, seed: int) -> str:
    """What makes a search's result reusable: the schema's content, the search space and settings."""
    from components.cnn import SPACE_VERSION

    settings = {k: v for k, v in dataclasses.asdict(tune).items() if k not in ("budget_seconds", "retune")}
    blob = json.dumps([schema.fingerprint, SPACE_VERSION, settings, batch_size, seed], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()



def reusable_hyperparameters(metadata, search: str) -> HyperParameters | None:
    """The newest search result in the store with the same schema, search space and settings (`search`,
    see `search_key`), whose files are intact; from any pipeline sharing the store.

    Example:
        >>> reusable_hyperparameters(Metadata.open(cfg), search_key(schema, cfg.tune, 128, 42)).values
        {'conv_blocks': 2, ...}
    """
    return history.newest_live(metadata, HyperParameters.kind, search=search)

def tune(examples: Examples, schema: Schema, *, out_dir: Path, tune: TuneConfig, batch_size: int, seed: int,
         devices: TrainConfig = TrainConfig(), budget: float | None = None, work_dir: Path | None = None,
         run_dir: Path | None = None, deadline: float | None = None) -> HyperParameters:
    """Searches the CNN space on the train split, scoring trials by eval-split accuracy.

    With `tune.enabled` false, no search runs and the reference hyperparameters are returned. With
    `tune.budget_seconds`, no trial starts after the budget and the trial in flight stops at it; the
    best trial so far is kept (the first trial, the reference model, always has a score). The search
    state lives in `work_dir`: called again after a kill, it resumes. Trials run on the devices of
    `devices` (its distribute, mixed_precision and deterministic). Under KerasTuner's distributed mode this process
    is the chief (it serves the oracle; workers run the trials) or a worker; see `distributed_role`.
    Under a whole-build `budget` (seconds) ending at `deadline`, the search gets its share of the time left
    (`components.budget.search_seconds`) and its trials train on a quarter of the train split unless
    `tune.train_fraction` says otherwise; too little for a search gives the reference hyperparameters, and
    of trials with equal scores the one with the fewest seconds per epoch is chosen. The chosen trial's
    weights are kept in the output (`weights`), for final training to start from.

    Example:
        >>> hp = tune(examples, schema, out_dir=Path("/tmp/hp"), tune=TuneConfig(max_trials=2),
        ...           batch_size=128, seed=42)
        >>> hp.values["conv_blocks"]
        2
    """
    from components.cnn import REFERENCE
    from components.schema import classes_of

    allotted, share_ends = tune.budget_seconds, None
    if budget is not None and deadline is not None:
        allotted = search_seconds(deadline, budget, time.time(), tune.budget_seconds)
        share_ends = time.time() + allotted
    if not tune.enabled or allotted == 0:
        return HyperParameters(uri=str(out_dir), fingerprint="", tuner="none", values=dict(REFERENCE), trials=(),
                               allotted=allotted if tune.enabled else None)
    role = distributed_role()
    oracle = _oracle(tune.tuner, tune.max_trials, tune.max_epochs, seed, tune.budget_seconds, share_ends)
    work = Path(work_dir) if work_dir else out_dir / "work"
    fraction = tune.train_fraction or (SEARCH_SUBSET if share_ends is not None else 1.0)
    trial_spec = {"train_pattern": examples.file_pattern("train"), "eval_pattern": examples.file_pattern("eval"),
                  "train_count": max(1, round(fraction * examples.counts["train"])), "batch_size": batch_size,
                  "seed": seed,
                  "distribute": devices.distribute, "mixed_precision": devices.mixed_precision,
                  "deterministic": devices.deterministic,
                  "classes": len(classes_of(schema))}
    logs = Path(run_dir) / "tensorboard" / "tune" if devices.tensorboard and run_dir is not None else None
    tuner = tuner_for(tune.tuner, oracle, work, trial_spec, logs)
    tuner.search(epochs=tune.max_epochs, verbose=0)
    if role == "worker":
        if work_dir is None:
            shutil.rmtree(work)
        trials = tuple({"trial_id": t, "tuner": os.environ["KERASTUNER_TUNER_ID"], **r} for t, r in tuner.ran.items())
        return HyperParameters(uri=str(out_dir), fingerprint="", tuner=tune.tuner, values={}, trials=trials)
    trials = trials_table(tuner)
    chosen = tuner.oracle.get_best_trials(1)[0].trial_id
    if share_ends is not None:  # the time left trains the chosen model: of equal scores, the cheaper one
        chosen = (fastest_of_the_best(trials) or {}).get("trial_id", chosen)
    best = {k: v for k, v in tuner.oracle.get_trial(chosen).hyperparameters.values.items()
            if not k.startswith("tuner/")}
    # The chosen trial's weights give final training a head start (train.warm_start); a trial run on
    # another machine's disk left none here.
    checkpoint = Path(weights_of(tuner, chosen))
    weights = WEIGHTS if checkpoint.is_file() else ""
    if weights:
        shutil.copyfile(checkpoint, out_dir / WEIGHTS)
    if work_dir is None:
        shutil.rmtree(work)  # called outside the runner: nothing to resume later
    return HyperParameters(uri=str(out_dir), fingerprint="", tuner=tune.tuner, values=best, allotted=allotted,
                           trials=trials, search=search_key(schema, tune, batch_size, seed), weights=weights,
                           weights_examples=examples.fingerprint if weights else "")


def summarize(hp: HyperParameters | None, info: dict) -> dict:
    """The run summary's `tuning` section: the trials table, the best values, and whether they were reused."""
    return {"tuning": hp and {"tuner": hp.tuner, "trials": list(hp.trials), "best_hyperparameters": hp.values,
                              "reused": info["record"].get("reused", False), "allotted_seconds": hp.allotted,
                              "tuner_id": os.environ.get("KERASTUNER_TUNER_ID") if distributed_role() else None}}


# The distributed member is part of the cache key: a worker's output (its own trials, no result) is never
# taken for a search result, and members on one root keep their search state apart.
# 6: trial and best weights in NumPy (components.checkpoint).
COMPONENT = Component(name="tune", fn=tune, inputs=(Examples, Schema), output=HyperParameters, version="6",
                      source_key=lambda **_: os.environ["KERASTUNER_TUNER_ID"] if distributed_role() else "")
