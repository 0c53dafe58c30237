"""Train: fits the CNN with the best hyperparameters; keeps the best epoch, stops early, resumes after a crash."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from components import checkpoint, train_report
from components.budget import planned_epochs, planned_schedule, training_end
from components.devices import distribution_strategy, input_device, mixed_precision_enabled
from components.ingest import Examples
from components.schema import Schema
from components.tune import HyperParameters
from engine.artifacts import Artifact
from engine.component import Component
from engine.errors import ConfigError, DataError, TrainingDiverged
from engine.failpoints import failpoint
from engine.files import write_text
from engine.settings import param

log = logging.getLogger("pipeline")
MONITOR = "val_accuracy"


@dataclass(frozen=True)
class Model(Artifact):
    """A trained Keras model `<uri>/model.keras` and its per-epoch history."""

    history: dict[str, list[float]]
    classes: tuple[str, ...] = tuple(str(i) for i in range(10))  # output i is the class classes[i]
    plan: dict[str, Any] = field(default_factory=dict)  # schedule, epochs planned and why training ended
    kind: ClassVar[str] = "Model"

    @property
    def path(self) -> str:
        return str(Path(self.uri) / "model.keras")


@dataclass(frozen=True)
class TrainConfig:
    """Final training with the best hyperparameters, and the devices it (and tuning) runs on."""

    epochs: int | None = param(None, low=1, high=10_000, flag="--epochs", help="training epochs at most; early "
                               "stopping may end sooner", default_help="10 after a search, 2 with --no-tune, 50 "
                               "with --budget")  # None: components.budget.planned_epochs
    patience: int = param(2, low=0, high=10_000)
    batch_size: int = param(128, low=1, high=65_536)
    deterministic: bool = param(False, flag="--deterministic", switch=True, help="bit-for-bit repeatable training: "
                                "op determinism and ordered input (slower)")
    distribute: str = param("auto", choices=("auto", "mirrored", "none"), flag="--distribute",
                            help="auto: MirroredStrategy over 2+ GPUs; mirrored: over all GPUs (or CPUs); none")
    mixed_precision: str = param("auto", choices=("auto", "on", "off"), flag="--mixed-precision",
                                 help="float16 compute: auto turns it on when a GPU is present")
    tensorboard: bool = True  # logs under <root>/runs/<run_id>/tensorboard
    # The learning rate over training: constant (the reference recipe) or a cosine decay to 0 over the
    # epochs planned, without early stopping; auto: cosine under a whole-build budget, else constant.
    schedule: str = param("auto", choices=("auto", "constant", "cosine"), flag="--schedule",
                          help="learning rate over training: constant, or cosine decay over the epochs planned; "
                               "auto: cosine under --budget")
    warm_start: bool = True  # start from the best trial's weights when the search ran on the same examples


def _resumable(work: Path, patience: int, epochs: int, schedule: str = "constant", learning_rate: float = 1e-3,
               end: float | None = None):
    """A callback keeping the history and the best epoch's model in `work`, and deciding when to stop.

    It stops early after `patience` epochs without a better score, except under the cosine `schedule`,
    which sets the learning rate of each epoch and ends at the epochs planned. With `end` (a time), the
    epochs planned are those that finish by then, re-planned after each epoch from the epochs' pace
    (`components.budget.epochs_that_fit`). All of it survives a kill: a restarted fit (BackupAndRestore
    restores the weights and the epoch) continues the same history, best score, patience and plan.
    """
    import keras

    from components.budget import cosine, epochs_that_fit

    class Resumable(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.history_path, self.best_path = work / "history.json", work / "best.keras"
            self.rows = json.loads(self.history_path.read_text()) if self.history_path.is_file() else []
            self.ended = None

        @property
        def best_epoch(self) -> int | None:
            scores = [row[MONITOR] for row in self.rows]
            return self.rows[scores.index(max(scores))]["epoch"] if scores else None

        @property
        def planned(self) -> int:
            """Epochs in all: `epochs`, or those that finish in the time left at the pace so far."""
            if end is None or not self.rows:
                return epochs
            # The first epoch also traces the graphs: the pace comes from later ones once there are any.
            # 5% over it covers the checkpoints written between epochs.
            paced = [row["seconds"] for row in self.rows[1:]] or [self.rows[0]["seconds"]]
            return epochs_that_fit(len(self.rows), 1.05 * sum(paced) / len(paced), time.time(), end, epochs)

        def stopping(self) -> str | None:
            """Why training ends after the epochs so far, or None to go on."""
            if not self.rows:
                return None
            last = self.rows[-1]["epoch"]
            if last + 1 >= epochs:
                return "epochs"
            if last + 1 >= self.planned:
                return "budget"
            if schedule == "constant" and last - self.best_epoch >= patience:
                return "early_stopping"
            return None

        def on_epoch_begin(self, epoch, logs=None):
            failpoint("train.epoch_begin")  # the previous epoch is backed up
            if schedule == "cosine":
                self.model.optimizer.learning_rate = cosine(learning_rate, epoch / max(self.planned, epoch + 1))
            self.start = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            # Before anything of the epoch is kept: weights that went non-finite would otherwise be
            # trained on for the remaining epochs while the best earlier epoch is pushed without a word.
            diverged = [f"{k} is {float(v)}" for k, v in (logs or {}).items()
                        if k.endswith("loss") and not math.isfinite(float(v))]
            if diverged:
                raise TrainingDiverged(f"train: epoch {epoch + 1}: {', '.join(diverged)}; training diverged: lower "
                                       "the learning rate (or check the data), then run again")
            row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()},
                   "seconds": round(time.monotonic() - self.start, 2),
                   # a MirroredVariable under a multi-device strategy: float() alone refuses it
                   "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))}
            # An epoch re-run after a kill replaces its earlier record.
            self.rows = [r for r in self.rows if r["epoch"] < epoch] + [row]
            if self.best_epoch == epoch:
                tmp = work / "best-partial.keras"
                try:
                    self.model.save(tmp)
                    os.replace(tmp, self.best_path)  # never a half-written best model
                finally:
                    tmp.unlink(missing_ok=True)  # a disk that filled up mid-write leaves nothing behind
            write_text(self.history_path, json.dumps(self.rows))
            metrics = " ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items()))
            log.info("  epoch %d/%d %s (%.1fs)", epoch + 1, self.planned, metrics, row["seconds"])
            failpoint("train.epoch_end")  # logged, not yet backed up: a kill here redoes this epoch
            self.ended = self.stopping()
            if self.ended:
                self.model.stop_training = True

    return Resumable()


def _BackUp(work: Path):
    """A callback backing up weights and optimizer state after each epoch (`components.checkpoint`)."""
    import keras

    class BackUp(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            checkpoint.save(self.model, work, epoch)

    return BackUp()


def warm_start_weights(hyperparameters: HyperParameters, examples: Examples) -> str | None:
    """The best trial's weights when its search trained on these examples' train split, else None (a
    search reused from other data, the reference without a search, a trial run on another machine)."""
    if not hyperparameters.weights or hyperparameters.weights_examples != examples.fingerprint:
        return None
    path = Path(hyperparameters.uri) / hyperparameters.weights
    return str(path) if path.is_file() else None


def train(examples: Examples, schema: Schema, hyperparameters: HyperParameters, *, out_dir: Path, train: TrainConfig,
          seed: int, budget: float | None = None, work_dir: Path | None = None, run_dir: Path | None = None,
          deadline: float | None = None) -> Model:
    """Trains on the train split, validating on eval; saves the best epoch's model as `model.keras`, with one
    output per class of the schema (whose names the Model artifact carries).

    Each finished epoch is backed up in `work_dir`: called again after a kill, training continues
    from the last finished epoch. Early stopping ends training after `train.patience` epochs without
    a better validation accuracy; the model kept is the best epoch's. `train.schedule` "cosine" decays the
    learning rate to 0 over the epochs planned instead, without early stopping. Under a whole-build `budget`
    ending at `deadline`, training plans the epochs that finish before the budget's reserve
    (`components.budget.training_end`) and starts no epoch it cannot finish; the first always runs.
    With `train.warm_start`, training starts from the best trial's weights when its search ran on these
    examples (`warm_start_weights`). TensorBoard logs go under `run_dir/tensorboard/train`.
    """
    import keras
    import tensorflow as tf

    from components.cnn import REFERENCE, build_model
    from components.inputs import make_dataset
    from components.schema import classes_of
    from engine.progress import keras_callback

    classes = classes_of(schema)
    work = Path(work_dir) if work_dir else out_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    if train.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = distribution_strategy(train.distribute)
    device, whole = input_device(strategy), strategy.num_replicas_in_sync > 1
    data = make_dataset(examples.file_pattern("train"), train.batch_size, shuffle=True, seed=seed,
                        shuffle_buffer=max(1, examples.counts["train"]), deterministic=train.deterministic,
                        device=device, drop_remainder=whole, classes=len(classes))
    validation = make_dataset(examples.file_pattern("eval"), train.batch_size, device=device, drop_remainder=whole,
                              classes=len(classes))
    if whole and train.batch_size % strategy.num_replicas_in_sync:
        raise ConfigError(f"train.batch_size {train.batch_size}: expected a multiple of the "
                          f"{strategy.num_replicas_in_sync} devices of the distribution strategy")
    if whole and examples.counts["eval"] < train.batch_size:
        raise DataError(f"eval split: {examples.counts['eval']} examples, fewer than one batch of "
                        f"{train.batch_size}; a multi-device strategy needs at least one full batch")
    with strategy.scope():
        model = build_model(hyperparameters.values, mixed_precision=mixed_precision_enabled(train.mixed_precision),
                            classes=len(classes))
    end = training_end(deadline, budget) if budget is not None and deadline is not None else None
    schedule = "constant" if train.schedule == "auto" else train.schedule
    progress = _resumable(work, train.patience, train.epochs, schedule,
                          hyperparameters.values.get("learning_rate", REFERENCE["learning_rate"]), end)
    warm = warm_start_weights(hyperparameters, examples) if train.warm_start else None
    backed_up = (work / checkpoint.NAME).is_file()
    with strategy.scope():
        initial = checkpoint.restore(model, work)
    if backed_up and not initial:  # an unreadable backup: what it recorded goes with it
        progress.rows = []
        for stale in (progress.history_path, progress.best_path):
            stale.unlink(missing_ok=True)
    if initial:
        log.info("  resuming training after epoch %d", initial)
    elif warm:
        checkpoint.load_weights(model, Path(warm))
    # Order matters: the history and best model are written before the backup marks the epoch done.
    callbacks = [progress, _BackUp(work)]
    if train.tensorboard and run_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(str(Path(run_dir) / "tensorboard" / "train")))
    steps = examples.counts["train"] // train.batch_size if whole else -(-examples.counts["train"] // train.batch_size)
    callbacks.append(keras_callback("train", train.epochs, steps))
    ended = progress.stopping()
    if not ended:
        model.fit(data, validation_data=validation, epochs=train.epochs, initial_epoch=initial, callbacks=callbacks,
                  verbose=0)
        ended = progress.ended or "epochs"
    rows = progress.rows
    history = {k: [row[k] for row in rows] for k in rows[0] if k not in ("epoch", "seconds", "learning_rate")}
    plan = {"schedule": schedule, "epochs_most": train.epochs, "epochs_run": len(rows), "ended": ended,
            "best_epoch": progress.best_epoch + 1, "epoch_seconds": [row["seconds"] for row in rows],
            "learning_rates": [row.get("learning_rate") for row in rows],
            "end": round(end, 2) if end is not None else None, "warm_start": warm is not None}
    result = Model(uri=str(out_dir), fingerprint="", history=history, classes=classes, plan=plan)
    shutil.copyfile(progress.best_path, result.path)
    if work_dir is None:
        shutil.rmtree(work)  # called outside the runner: nothing to resume later
    return result


def summarize(model: Model | None, info: dict) -> dict:
    """The run summary's `training` section; `tensorboard` when this run trained (a cached train logs nothing)."""
    logs = Path(info["run_dir"]) / "tensorboard"
    return {"training": model and {"history": model.history, "model": model.path, "plan": model.plan,
                                   "tensorboard": str(logs) if logs.is_dir() else None}}


def _params(cfg, out, metadata) -> dict:
    planned = dataclasses.replace(cfg.train, epochs=planned_epochs(cfg), schedule=planned_schedule(cfg))
    return {"seed": cfg.seed, "budget": cfg.budget_seconds, "train": planned}


# 5: the epoch backup is components.checkpoint's
COMPONENT = Component(name="train", fn=train, inputs=(Examples, Schema, HyperParameters), output=Model, version="5",
                      settings=TrainConfig, params=_params, summary=summarize, report=train_report.report_section)
