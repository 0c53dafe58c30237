"""The search's KerasTuner machinery: the oracle (reference model first, budget-aware), a tuner running each trial in a
process of its own, the trials table, and the distributed role."""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from pathlib import Path

from engine.errors import ConfigError
from engine.failpoints import failpoint

log = logging.getLogger("pipeline")
OBJECTIVE = "val_accuracy"
TUNERS = ("hyperband", "bayesian", "random")


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


def _oracle(name: str, max_trials: int, max_epochs: int, seed: int, budget: float | None, end: float | None = None,
            plan: tuple[float, float] | None = None):
    """The search's oracle. Under a whole-build budget, `plan` is (the share of the train split trials train on,
    when final training must end): the search then also ends once its trials stop raising the best prediction
    of the trained model's accuracy (`components.budget.search_plateaued`)."""
    import keras_tuner as kt

    from components import budget as plans

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
                self.stopped_by = "budget"
                return {"status": "STOPPED", "values": None}
            if plan is not None and plans.search_plateaued(self.records(), plan[1], plan[0], plans.SEARCH_PATIENCE):
                self.stopped_by = "plateau"
                return {"status": "STOPPED", "values": None}
            proposal = super().populate_space(trial_id)
            values = proposal.get("values") or {}
            epochs = values.get("tuner/epochs", max_epochs) - values.get("tuner/initial_epoch", 0)
            pace = self.epoch_seconds()
            if self.deadline is not None and pace and time.time() + pace * epochs > self.deadline:
                self.stopped_by = "budget"
                return {"status": "STOPPED", "values": None}
            return proposal

        def records(self) -> tuple[dict, ...]:
            """The finished trials' records: id, curve, pace and when each ended."""
            return tuple({"trial_id": t, **r} for t, r in sorted(self.info.items()) if r.get("ended_at"))

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
            if trial.status == "RUNNING":  # a re-queued trial keeps the workers it was lost with
                self.info[trial.trial_id] = {**self.info.get(trial.trial_id, {}), "tuner": tuner_id,
                                             "start": time.time()}
            return trial

        def end_trial(self, trial):
            record = self.info.setdefault(trial.trial_id, {})
            if "start" in record:
                record["seconds"] = round(time.time() - record["start"], 2)
            # The oracle's own record of the trial holds the metrics reported to it: a distributed worker's
            # copy, sent with its end, has none.
            metrics = self.trials[trial.trial_id].metrics if trial.trial_id in self.trials else trial.metrics
            if metrics.exists("epochs_run"):
                record["epochs"] = int(metrics.get_history("epochs_run")[-1].value[0])
            if trial.status == "COMPLETED" and metrics.exists(OBJECTIVE):
                # A Hyperband round continuing an earlier trial: its curve goes on from the earlier one's.
                earlier = self.info.get(trial.hyperparameters.values.get("tuner/trial_id") or "", {})
                own = [[int(o.step), float(o.value[0])] for o in metrics.get_history(OBJECTIVE)]
                record["curve"] = [p for p in earlier.get("curve", []) if p[0] < own[0][0]] + own
                if metrics.exists("epoch_seconds"):
                    record["epoch_seconds"] = float(metrics.get_history("epoch_seconds")[-1].value[0])
                record["ended_at"] = time.time()
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
    oracle.started, oracle.info, oracle.stopped_by = time.time(), {}, None
    return oracle


def _tuner(name: str, oracle, directory: Path, trial_spec: dict, tensorboard: Path | None,
           worker_timeout: float = 300.0):
    """A KerasTuner tuner that runs each trial in its own process (see components.trial). In a distributed
    search its chief and workers keep track of each other (`components.search_chief`): a worker silent for
    `worker_timeout` seconds is lost, and a chief without workers for that long ends the search."""
    import keras_tuner as kt

    from components.cnn import CNNHyperModel
    from components.trial import TrialSpec, run_in_subprocess

    base = {"hyperband": kt.Hyperband, "bayesian": kt.BayesianOptimization, "random": kt.RandomSearch}[name]

    class InProcessOfItsOwn(base):
        def search(self, *fit_args, **fit_kwargs):
            from components import search_chief

            role = distributed_role()
            if role == "chief":  # KerasTuner's own chief waits for ever for workers that died
                self.save()
                ended = search_chief.serve(self.oracle, worker_timeout)
                self.ended = (getattr(self.oracle, "stopped_by", None) or ended) if ended == "done" else ended
                return
            with search_chief.heartbeat(os.environ["KERASTUNER_TUNER_ID"], worker_timeout) if role \
                    else contextlib.nullcontext():
                super().search(*fit_args, **fit_kwargs)
            self.ended = getattr(self.oracle, "stopped_by", None) or "done"

        def _run_and_update_trial(self, trial, *fit_args, **fit_kwargs):
            # Each epoch's score goes to the oracle as a step of the objective's history: its learning curve.
            metrics = self.run_trial(trial, *fit_args, **fit_kwargs)
            curve, first = metrics.pop("curve"), metrics.pop("first_epoch")
            for epoch, score in enumerate(curve, start=first):
                self.oracle.update_trial(trial.trial_id, {OBJECTIVE: score}, step=epoch)
            if metrics.get("epoch_seconds") is None:
                metrics.pop("epoch_seconds", None)
            # The best epoch's metrics at its step: its score is counted again there, which leaves the mean alone.
            self.oracle.update_trial(trial.trial_id, metrics, step=first + curve.index(max(curve)))

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
                     "tuner": info.get("tuner"), "lost": info.get("lost", []),
                     "curve": info.get("curve"), "epoch_seconds": info.get("epoch_seconds"),
                     "hyperparameters": {k: v for k, v in trial.hyperparameters.values.items()
                                         if not k.startswith("tuner/")}})
    return tuple(rows)
