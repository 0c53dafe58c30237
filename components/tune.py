"""Tune: a KerasTuner search over the CNN space; its first trial is always the reference model."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from components import tune_report
from components.budget import SEARCH_SUBSET, WEEK, best_predicted, planned_trials, predictions, search_seconds, \
    training_end
from components.search import TUNERS, _oracle, _trials_table, _tuner, _weights_of, distributed_role
from engine import history
from components.ingest import Examples
from components.schema import Schema
from engine.artifacts import Artifact
from engine.component import Component
from engine.dag import Stop
from engine.errors import PipelineError, WorkerLost
from engine.settings import param, parse_duration

if TYPE_CHECKING:  # train takes tune's output, so tune imports train only when it runs
    from components.train import TrainConfig

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
    # why the search ended: done; budget (its time share); plateau (under a budget, its trials stopped raising the
    # prediction); or no_workers (a distributed search's chief left without any)
    ended: str = ""
    fraction: float = 1.0  # the share of the train split the trials trained on
    examples: str = ""  # the fingerprint of the Examples the trials ran on: their curves describe those
    kind: ClassVar[str] = "HyperParameters"

    @staticmethod
    def described(p: dict) -> str:
        return f"{p.get('tuner')} {json.dumps(p.get('values'))}"


@dataclass(frozen=True)
class TuneConfig:
    """KerasTuner search settings."""

    enabled: bool = param(True, flag="--no-tune", switch=False, help="skip the search: the reference model and "
                          "recipe (2 epochs unless --epochs) (default: off)")
    tuner: str = param("hyperband", choices=TUNERS, flag="--tuner", help="the KerasTuner algorithm")
    max_trials: int | None = param(None, low=1, high=10_000, flag="--max-trials", help="tuning trials at most",
                                   default_help="10; under --budget, as many as its plan runs")
    max_epochs: int = param(2, low=1, high=1000, flag="--max-epochs", help="epochs per tuning trial at most")
    budget_seconds: float | None = param(None, above=0, high=WEEK, flag="--tune-budget", parse=parse_duration,
                                         metavar="DURATION", help="wall clock for the search, e.g. 90s, 10m, 1h "
                                         "(default: none)")
    # The share of the train split each trial trains on (multi-fidelity); None: all of it, or a quarter
    # under a whole-build budget (components.budget.SEARCH_SUBSET).
    train_fraction: float | None = param(None, above=0, high=1)
    # A distributed search: a worker silent this long is lost (its trial goes to another), and a chief that
    # hears from no worker this long ends the search with the trials it has.
    worker_timeout: float = param(300.0, above=0, high=WEEK, flag="--worker-timeout", parse=parse_duration,
                                  metavar="DURATION", help="distributed search: how long the chief waits for a "
                                  "silent worker before re-queuing its trial, or for any worker before ending the "
                                  "search (default: 5m)")
    retune: bool = param(False, flag="--retune", switch=True,
                         help="search again although a result for this schema and search space exists")


def search_key(schema: Schema, tune: TuneConfig, batch_size: int, seed: int) -> str:
    """What makes a search's result reusable: the schema's content, the search space and settings."""
    from components.cnn import SPACE_VERSION

    settings = {k: v for k, v in dataclasses.asdict(tune).items()
                if k not in ("budget_seconds", "retune", "worker_timeout")}
    blob = json.dumps([schema.fingerprint, SPACE_VERSION, settings, batch_size, seed], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def reusable_hyperparameters(metadata, search: str) -> HyperParameters | None:
    """The newest search result in the store with the same schema, search space and settings (`search`,
    see `search_key`), whose files are intact; from any pipeline sharing the store."""
    return history.newest_live(metadata, HyperParameters.kind, search=search)


def tune(examples: Examples, schema: Schema, *, out_dir: Path, tune: TuneConfig, batch_size: int, seed: int,
         devices: TrainConfig | None = None, budget: float | None = None, work_dir: Path | None = None,
         run_dir: Path | None = None, deadline: float | None = None) -> HyperParameters:
    """Searches the CNN space on the train split, scoring trials by eval-split accuracy.

    With `tune.enabled` false, no search runs and the reference hyperparameters are returned. With
    `tune.budget_seconds`, no trial starts after the budget and the trial in flight stops at it; the
    best trial so far is kept (the first trial, the reference model, always has a score). The search
    state lives in `work_dir`: called again after a kill, it resumes. Trials run on the devices of
    `devices` (its distribute, mixed_precision and deterministic; None: train's defaults). Under KerasTuner's
    distributed mode this process is the chief (it serves the oracle; workers run the trials) or a worker; see
    `distributed_role`.
    Under a whole-build `budget` (seconds) ending at `deadline`, the search gets its share of the time left
    (`components.budget.search_seconds`) and its trials train on a quarter of the train split unless
    `tune.train_fraction` says otherwise; too little for a search gives the reference hyperparameters, and
    of trials with equal scores the one with the fewest seconds per epoch is chosen. The chosen trial's
    weights are kept in the output (`weights`), for final training to start from.
    """
    from components.cnn import REFERENCE
    from components.train import TrainConfig  # train takes tune's output: imported when tuning

    devices = devices or TrainConfig()
    from components.schema import classes_of

    allotted, share_ends, plan = tune.budget_seconds, None, None
    if budget is not None and deadline is not None:
        allotted = search_seconds(deadline, budget, time.time(), tune.budget_seconds)
        share_ends = time.time() + allotted
    if not tune.enabled or allotted == 0:
        return HyperParameters(uri=str(out_dir), fingerprint="", tuner="none", values=dict(REFERENCE), trials=(),
                               allotted=allotted if tune.enabled else None)
    role = distributed_role()
    fraction = tune.train_fraction or (SEARCH_SUBSET if share_ends is not None else 1.0)
    if share_ends is not None:
        plan = (fraction, training_end(deadline, budget))
    oracle = _oracle(tune.tuner, planned_trials(tune.max_trials, share_ends is not None), tune.max_epochs, seed,
                     tune.budget_seconds, share_ends, plan)
    work = Path(work_dir) if work_dir else out_dir / "work"
    trial_spec = {"train_pattern": examples.file_pattern("train"), "eval_pattern": examples.file_pattern("eval"),
                  "train_count": max(1, round(fraction * examples.counts["train"])), "batch_size": batch_size,
                  "seed": seed,
                  "distribute": devices.distribute, "mixed_precision": devices.mixed_precision,
                  "deterministic": devices.deterministic,
                  "classes": len(classes_of(schema))}
    logs = Path(run_dir) / "tensorboard" / "tune" if devices.tensorboard and run_dir is not None else None
    tuner = _tuner(tune.tuner, oracle, work, trial_spec, logs, tune.worker_timeout)
    tuner.search(epochs=tune.max_epochs, verbose=0)
    if role == "worker":
        if work_dir is None:
            shutil.rmtree(work)
        trials = tuple({"trial_id": t, "tuner": os.environ["KERASTUNER_TUNER_ID"], **r} for t, r in tuner.ran.items())
        return HyperParameters(uri=str(out_dir), fingerprint="", tuner=tune.tuner, values={}, trials=trials)
    trials = _trials_table(tuner)
    if not any(t.status == "COMPLETED" for t in tuner.oracle.trials.values()):
        if tuner.ended != "no_workers":
            raise PipelineError(f"tune: no trial of the search finished: {len(trials)} failed; see the trials above")
        raise WorkerLost(f"tune: no trial finished and no worker of the distributed search was heard from for "
                         f"{tune.worker_timeout:g}s; expected workers started with this chief's KERASTUNER_ORACLE_IP "
                         "and KERASTUNER_ORACLE_PORT (or a longer --worker-timeout)")
    chosen = tuner.oracle.get_best_trials(1)[0].trial_id
    if plan is not None:  # the time left trains the chosen model: the best predicted after that training
        left = plan[1] - time.time()
        predicted = predictions(trials, left, fraction)
        trials = tuple({**t, "predicted": predicted.get(t["trial_id"])} for t in trials)
        chosen = (best_predicted(trials, left, fraction) or {}).get("trial_id", chosen)
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
                           trials=trials, ended=tuner.ended, fraction=fraction, weights=weights,
                           examples=examples.fingerprint,
                           search=search_key(schema, tune, batch_size, seed),
                           weights_examples=examples.fingerprint if weights else "")


def summarize(hp: HyperParameters | None, info: dict) -> dict:
    """The run summary's `tuning` section: the trials table, the best values, and whether they were reused."""
    return {"tuning": hp and {"tuner": hp.tuner, "trials": list(hp.trials), "best_hyperparameters": hp.values,
                              "reused": info["record"].get("reused", False), "allotted_seconds": hp.allotted,
                              "tuner_id": os.environ.get("KERASTUNER_TUNER_ID") if distributed_role() else None,
                              "ended": hp.ended or None}}


def _params(cfg, out, metadata) -> dict:
    from components.train import TrainConfig

    # Only the device settings of train reach tune, so other training flags don't invalidate a search.
    devices = TrainConfig(distribute=cfg.train.distribute, mixed_precision=cfg.train.mixed_precision,
                          tensorboard=cfg.train.tensorboard, deterministic=cfg.train.deterministic)
    return {"tune": cfg.tune, "batch_size": cfg.train.batch_size, "seed": cfg.seed, "devices": devices,
            "budget": cfg.budget_seconds}


def _reusable(cfg, out, metadata) -> HyperParameters | None:
    """A search result for the same schema, space and settings, on any data (a distributed search always
    searches: its workers wait for a chief serving trials)."""
    if not cfg.tune.enabled or distributed_role() is not None:
        return None
    return reusable_hyperparameters(metadata, search_key(out["schema"], cfg.tune, cfg.train.batch_size,
                                                                 cfg.seed))


# The distributed member is part of the cache key: a worker's output (its own trials, no result) is never
# taken for a search result, and members on one root keep their search state apart.
# 6: trial and best weights in NumPy (components.checkpoint).
COMPONENT = Component(name="tune", fn=tune, inputs=(Examples, Schema), output=HyperParameters, version="6",
                      source_key=lambda **_: os.environ["KERASTUNER_TUNER_ID"] if distributed_role() else "",
                      settings=TuneConfig, params=_params, reuse=_reusable, summary=summarize,
                      report=tune_report.report_section,
                      headline=lambda s: f", {len(s['tuning']['trials'])} trials run for the chief"
                      if s["status"] == "tuned" else "",
                      rerun=lambda cfg: cfg.tune.retune or distributed_role() is not None,
                      # A distributed-tuning worker stops once it ran its share of the chief's trials.
                      gate=lambda hp, cfg: Stop("tuned") if distributed_role() == "worker" else None)
