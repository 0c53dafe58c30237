"""Tune: a KerasTuner search over the CNN space; its first trial is always the reference model."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

from components.budget import SEARCH_SUBSET, fastest_of_the_best, search_seconds
from pipeline.config import TUNERS, TrainConfig, TuneConfig
from engine.artifacts import Examples, HyperParameters, Schema
from engine.component import Component
from engine.errors import ConfigError
from engine.failpoints import failpoint

log = logging.getLogger("pipeline")
OBJECTIVE = "val_accuracy"
WEIGHTS = "best.weights.npz"  # the best trial's weights, in the output (components.checkpoint)


def distributed_role() -> str | None:
    """`chief` or `worker` under KerasTuner's distributed mode (KERASTUNER_* variables), else None."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    missing = [v for v in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if not os.environ.get(v)]
    if missing:
        raise ConfigError(f"KERASTUNER_ORACLE_IP is set but {' and '.join(missing)} not: distributed tuning needs "
                          "KERASTUNER_TUNER_ID (chief, or a worker name) and KERASTUNER_ORACLE_PORT")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def _memory_mb() -> float | None:
    """This process's resident memory now (not its peak), from /proc."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


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


def _tuner(name: str, oracle, directory: Path, trial_spec: dict, tensorboard: Path | None):
    """A KerasTuner tuner that runs each trial in its own process (see components.trial)."""
    import keras_tuner as kt

    from components.cnn import CNNHyperModel
    from components.trial import TrialSpec, run_in_subprocess

    base = {"hyperband": kt.Hyperband, "bayesian": kt.BayesianOptimization, "random": kt.RandomSearch}[name]

    class InProcessOfItsOwn(base):
        def run_trial(self, trial, *fit_args, **fit_kwargs):
            hp = trial.hyperparameters
            earlier = hp.values.get("tuner/trial_id")  # a Hyperband round continuing an earlier trial
            spec = TrialSpec(**trial_spec, hyperparameters=hp.get_config(),
                             epochs=hp.values.get("tuner/epochs", fit_kwargs["epochs"]),
                             initial_epoch=hp.values.get("tuner/initial_epoch", 0),
                             checkpoint=_weights_of(self, trial.trial_id),
                             resume_from=_weights_of(self, earlier) if earlier else None,
                             deadline=self.oracle.deadline if hasattr(self.oracle, "deadline") else None,
                             tensorboard=str(tensorboard / trial.trial_id) if tensorboard else None)
            start = time.monotonic()
            try:
                metrics = run_in_subprocess(spec, Path(self.get_trial_dir(trial.trial_id)) / "process",
                                            label=f"trial {trial.trial_id}")
            except OSError as exc:  # a full disk fails every trial after it: the search stops, saying why
                raise kt.errors.FatalError(str(exc)) from exc
            self.ran[trial.trial_id] = {"seconds": round(time.monotonic() - start, 2), "memory_mb": _memory_mb(),
                                        "peak_mb": metrics.pop("peak_mb"),
                                        "deterministic": metrics.pop("deterministic")}
            return metrics

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            score = self.oracle.get_trial(trial.trial_id).score
            ran = self.ran.get(trial.trial_id, {})
            log.info("  trial %s %s%s (%.1fs; tuner %s MB, trial peak %s MB)", trial.trial_id, trial.status.lower(),
                     f" {OBJECTIVE}={score:.4f}" if score is not None else "", ran.get("seconds", 0),
                     ran.get("memory_mb"), ran.get("peak_mb"))
            failpoint("tune.trial_end")

    # These tuners' constructors only build their stock oracle; ours is passed to the base Tuner instead.
    tuner = InProcessOfItsOwn.__new__(InProcessOfItsOwn)
    tuner.ran = {}  # trial id: seconds and memory of the trials this process ran
    tuner.train_count = trial_spec["train_count"]
    # overwrite=False: a search killed midway resumes from its saved trials (the one in flight re-runs).
    kt.Tuner.__init__(tuner, oracle=oracle, hypermodel=CNNHyperModel(), directory=str(directory),
                      project_name="search", overwrite=False)
    return tuner


def _weights_of(tuner, trial_id: str) -> str:
    """Where a trial's weights go: beside KerasTuner's checkpoint name, in NumPy (components.checkpoint)."""
    return str(Path(tuner._get_checkpoint_fname(trial_id)).with_name("checkpoint.npz"))


def _trials_table(tuner) -> tuple[dict, ...]:
    rows = []
    for trial in sorted(tuner.oracle.trials.values(), key=lambda t: t.trial_id):
        score = trial.score if trial.score is not None and not math.isnan(trial.score) else None
        epochs = [int(o.value[0]) for o in trial.metrics.get_history("epochs_run")] \
            if trial.metrics.exists("epochs_run") else []
        info, ran = tuner.oracle.info.get(trial.trial_id, {}), tuner.ran.get(trial.trial_id, {})
        rows.append({"trial_id": trial.trial_id, "status": trial.status, "score": score,
                     "epochs": epochs[-1] if epochs else None,
                     "seconds": info.get("seconds", ran.get("seconds")), "memory_mb": ran.get("memory_mb"),
                     "peak_mb": ran.get("peak_mb"), "deterministic": ran.get("deterministic"),
                     "train_examples": tuner.train_count,
                     "tuner": info.get("tuner"),
                     "hyperparameters": {k: v for k, v in trial.hyperparameters.values.items()
                                         if not k.startswith("tuner/")}})
    return tuple(rows)


def search_key(schema: Schema, tune: TuneConfig, batch_size: int, seed: int) -> str:
    """What makes a search's result reusable: the schema's content, the search space and settings."""
    from components.cnn import SPACE_VERSION

    settings = {k: v for k, v in dataclasses.asdict(tune).items() if k not in ("budget_seconds", "retune")}
    blob = json.dumps([schema.fingerprint, SPACE_VERSION, settings, batch_size, seed], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


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
    tuner = _tuner(tune.tuner, oracle, work, trial_spec, logs)
    tuner.search(epochs=tune.max_epochs, verbose=0)
    if role == "worker":
        if work_dir is None:
            shutil.rmtree(work)
        trials = tuple({"trial_id": t, "tuner": os.environ["KERASTUNER_TUNER_ID"], **r} for t, r in tuner.ran.items())
        return HyperParameters(uri=str(out_dir), fingerprint="", tuner=tune.tuner, values={}, trials=trials)
    trials = _trials_table(tuner)
    chosen = tuner.oracle.get_best_trials(1)[0].trial_id
    if share_ends is not None:  # the time left trains the chosen model: of equal scores, the cheaper one
        chosen = (fastest_of_the_best(trials) or {}).get("trial_id", chosen)
    best = {k: v for k, v in tuner.oracle.get_trial(chosen).hyperparameters.values.items()
            if not k.startswith("tuner/")}
    # The chosen trial's weights give final training a head start (train.warm_start); a trial run on
    # another machine's disk left none here.
    checkpoint = Path(_weights_of(tuner, chosen))
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
