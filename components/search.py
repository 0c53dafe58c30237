"""The KerasTuner tuner of a search: each trial in a process of its own (components.trial), and the table of
its trials."""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

from engine.failpoints import failpoint

log = logging.getLogger("pipeline")
OBJECTIVE = "val_accuracy"


def memory_mb() -> float | None:
    """This process's resident memory now (not its peak), from /proc."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def tuner_for(name: str, oracle, directory: Path, trial_spec: dict, tensorboard: Path | None):
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
                             checkpoint=weights_of(self, trial.trial_id),
                             resume_from=weights_of(self, earlier) if earlier else None,
                             deadline=self.oracle.deadline if hasattr(self.oracle, "deadline") else None,
                             tensorboard=str(tensorboard / trial.trial_id) if tensorboard else None)
            start = time.monotonic()
            try:
                metrics = run_in_subprocess(spec, Path(self.get_trial_dir(trial.trial_id)) / "process",
                                            label=f"trial {trial.trial_id}")
            except OSError as exc:  # a full disk fails every trial after it: the search stops, saying why
                raise kt.errors.FatalError(str(exc)) from exc
            self.ran[trial.trial_id] = {"seconds": round(time.monotonic() - start, 2), "memory_mb": memory_mb(),
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


def weights_of(tuner, trial_id: str) -> str:
    """Where a trial's weights go: beside KerasTuner's checkpoint name, in NumPy (components.checkpoint)."""
    return str(Path(tuner._get_checkpoint_fname(trial_id)).with_name("checkpoint.npz"))


def trials_table(tuner) -> tuple[dict, ...]:
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
