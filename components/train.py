"""Train: fits the CNN with the best hyperparameters; keeps the best epoch, stops early, resumes after a crash."""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from components import checkpoint, train_report
from components.speed import PLAIN, SAVED, compiled, fastest_step
from components.train_callbacks import backup, resumable
from components.budget import plateau_passes, planned_epochs, planned_schedule, planned_shift, training_end
from components.devices import (agree, distribution_strategy, input_device, lost_worker, multi_worker, prepare,
                               same_everywhere)
from components.ingest import Examples
from components.schema import Schema, classes_of
from components.tune import HyperParameters
from engine.artifacts import Artifact
from engine.component import Component
from engine.dag import Stop
from engine.errors import ConfigError, DataError
from engine.settings import param

log = logging.getLogger("pipeline")


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
    distribute: str = param("auto", choices=("auto", "mirrored", "multi_worker", "none"), flag="--distribute",
                            help="auto: MultiWorkerMirroredStrategy when TF_CONFIG names 2+ tasks, else "
                                 "MirroredStrategy over 2+ GPUs; mirrored: over all GPUs (or CPUs); multi_worker: "
                                 "over TF_CONFIG's cluster; none")
    mixed_precision: str = param("auto", choices=("auto", "on", "off"), flag="--mixed-precision",
                                 help="float16 compute: auto turns it on when a GPU is present")
    tensorboard: bool = True  # logs under <root>/runs/<run_id>/tensorboard
    # The learning rate over training: constant (the reference recipe) or a cosine decay to 0 over the
    # epochs planned, without early stopping; auto: cosine under a whole-build budget, else constant.
    schedule: str = param("auto", choices=("auto", "constant", "cosine"), flag="--schedule",
                          help="learning rate over training: constant, or cosine decay over the epochs planned; "
                               "auto: cosine under --budget")
    warm_start: bool = True  # start from the best trial's weights when the search ran on the same examples
    # Unset: components.budget.planned_shift (on for a long budgeted training, whose model would otherwise
    # learn its training images by heart).
    shift: int | None = param(None, low=0, high=8, flag="--shift", help="augmentation: move each training image by "
                              "up to N pixels each way", default_help="1 under --budget for a training the step "
                              "probe expects to make 50 passes or more, else 0")
    label_smoothing: float = param(0.0, low=0, below=1, flag="--label-smoothing",
                                   help="spread this share of each label over all classes")


def warm_start_weights(hyperparameters: HyperParameters, examples: Examples) -> str | None:
    """The best trial's weights when its search trained on these examples' train split, else None (a
    search reused from other data, the reference without a search, a trial run on another machine)."""
    if not hyperparameters.weights or hyperparameters.weights_examples != examples.fingerprint:
        return None
    path = Path(hyperparameters.uri) / hyperparameters.weights
    return str(path) if path.is_file() else None


def train(examples: Examples, schema: Schema, hyperparameters: HyperParameters, *, out_dir: Path, train: TrainConfig,
          seed: int, budget: float | None = None, work_dir: Path | None = None, run_dir: Path | None = None,
          deadline: float | None = None, report: Path | None = None) -> Model:
    """Trains on the train split, validating on eval; saves the best epoch's model as `model.keras`, with one
    output per class of the schema (whose names the Model artifact carries).

    Each finished epoch is backed up in `work_dir`: called again after a kill, training continues
    from the last finished epoch. Early stopping ends training after `train.patience` epochs without
    a better validation accuracy; the model kept is the best epoch's. `train.schedule` "cosine" decays the
    learning rate to 0 over the epochs planned instead, without early stopping. Under a whole-build `budget`
    ending at `deadline`, training plans the epochs that finish before the budget's reserve
    (`components.budget.training_end`) and starts no epoch it cannot finish; the first always runs. It also
    plans no more epochs than the search's learning curves say still add accuracy (`ended: plateau`), when
    the search ran on these examples, and moves its images when long (`components.budget.planned_shift`).
    With `train.warm_start`, training starts from the best trial's weights when its search ran on these
    examples (`warm_start_weights`). TensorBoard logs go under `run_dir/tensorboard/train`.

    On a multi-worker cluster (`components.devices.multi_worker`) every worker calls this with the same
    data and settings; training runs in a process of its own (`components.train_process`), each worker
    backs up its epochs in its own `work_dir` and they resume from the last epoch all of them backed up.
    A worker that stops answering fails the others with WorkerLost, naming it.
    """
    where = multi_worker(train.distribute)
    work = Path(work_dir) if work_dir else out_dir / "work"
    end = training_end(deadline, budget) if budget is not None and deadline is not None else None
    schedule = "constant" if train.schedule == "auto" else train.schedule
    from components.cnn import REFERENCE

    learning_rate = hyperparameters.values.get("learning_rate", REFERENCE["learning_rate"])
    # A search reused from other examples (same schema) has curves of other data: they set no plateau here.
    curves = end is not None and hyperparameters.examples == examples.fingerprint
    passes = plateau_passes(hyperparameters.trials, hyperparameters.fraction) if curves else None
    plateau = max(1, math.ceil(passes)) if passes is not None and passes < train.epochs else None
    configured = train.shift or 0  # without a step probe (components.budget.planned_shift)
    if where is not None and os.environ.get("PIPELINE_TRAIN_PROCESS") != "1":
        from components import train_process

        # A member killed after its training ended but before its output was committed finishes from its own
        # files: the others may have committed theirs, and would never join a cluster again.
        finished = resumable(work, train.patience, train.epochs, schedule, learning_rate, end, plateau=plateau)
        ended = finished.stopping() if finished.best_path.is_file() else None
        if ended:
            log.info("  training had ended (%s) before this member was stopped: its files are its output", ended)
            return _result(finished, ended, classes_of(schema), out_dir, schedule, train, end, warm=None,
                           shift=configured)
        return train_process.run(examples, schema, hyperparameters, out_dir=out_dir, train=train, work=work,
                                 seed=seed, budget=budget, run_dir=run_dir, deadline=deadline)
    import keras
    import tensorflow as tf

    from components.cnn import build_model
    from components.inputs import make_dataset
    from engine.progress import keras_callback

    strategy = distribution_strategy(train.distribute)  # first: a multi-worker one refuses to come after any op
    classes = classes_of(schema)
    work.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    if train.deterministic:
        tf.config.experimental.enable_op_determinism()
    device, whole = input_device(strategy), strategy.num_replicas_in_sync > 1
    # Every worker reads the examples in the same order and takes its part of each batch.
    training_data = functools.partial(make_dataset, examples.file_pattern("train"), train.batch_size, shuffle=True,
                                      seed=seed, shuffle_buffer=max(1, examples.counts["train"]), device=device,
                                      deterministic=train.deterministic or where is not None, drop_remainder=whole,
                                      classes=len(classes), shard_by_data=where is not None)
    data = training_data(shift=configured)
    validation = make_dataset(examples.file_pattern("eval"), train.batch_size, device=device, drop_remainder=whole,
                              classes=len(classes), shard_by_data=where is not None)
    # Under a budget the workers agree on the epochs left after each epoch: all of them, or none.
    same_everywhere(strategy, [examples.fingerprint, hyperparameters.values, dataclasses.asdict(train), seed,
                               end is not None], "train: the workers of the multi-worker training differ in their "
                    "data, hyperparameters or settings; expected every worker to run the same command on the same "
                    "data (a shared --root gives them the same search result)")
    if whole and train.batch_size % strategy.num_replicas_in_sync:
        raise ConfigError(f"train.batch_size {train.batch_size}: expected a multiple of the "
                          f"{strategy.num_replicas_in_sync} devices of the distribution strategy")
    if whole and examples.counts["eval"] < train.batch_size:
        raise DataError(f"eval split: {examples.counts['eval']} examples, fewer than one batch of "
                        f"{train.batch_size}; a multi-device strategy needs at least one full batch")
    per_epoch = math.ceil(examples.counts["train"] / train.batch_size)
    most = min(train.epochs, plateau or train.epochs) * per_epoch
    speed = fastest_step(data, hyperparameters.values, len(classes), train.mixed_precision, most, work / SAVED) \
        if end is not None and where is None and not whole and not train.deterministic else None
    setting = speed["chosen"] if speed else PLAIN
    shift = planned_shift(train.shift, speed, per_epoch, end)
    if shift != configured:
        data = training_data(shift=shift)
    with strategy.scope():
        model = build_model(hyperparameters.values, classes=len(classes), label_smoothing=train.label_smoothing,
                            **compiled(setting, train.mixed_precision))
    prepare(model, strategy)
    progress = resumable(work, train.patience, train.epochs, schedule, learning_rate, end,
                         agreed=lambda planned: agree(strategy, planned), plateau=plateau)
    warm = warm_start_weights(hyperparameters, examples) if train.warm_start else None
    backed_up = (work / checkpoint.NAME).is_file()
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    fresh = [keras.ops.convert_to_numpy(v) for v in (*model.weights, *model.optimizer.variables)]
    with strategy.scope():
        initial = checkpoint.restore(model, work)
    if backed_up and not initial:  # an unreadable backup: what it recorded goes with it
        progress.rows = []
        for stale in (progress.history_path, progress.best_path):
            stale.unlink(missing_ok=True)
    everyone = int(agree(strategy, initial))  # the last epoch every worker backed up
    if everyone != initial:  # a worker was lost between the others' backups: all go on from the one they share
        with strategy.scope():
            found = not everyone or checkpoint.restore(model, work, epochs=everyone) == everyone
            if not everyone:  # start over, as the others do
                for variable, value in zip((*model.weights, *model.optimizer.variables), fresh):
                    variable.assign(value)
        initial = everyone
    else:
        found = True
    if not agree(strategy, float(found)):  # every worker stops alike, rather than the others waiting for one
        raise DataError(f"train: a worker holds no backup of epoch {everyone}, where the others resume; delete "
                        "the training backups (<root>/artifacts/train/.*.work) of every worker to start over")
    if where is not None:  # a history row of an epoch not backed up (killed between the two) goes too
        progress.step_back(initial)
    if initial:
        log.info("  resuming training after epoch %d", initial)
    elif warm:
        checkpoint.load_weights(model, Path(warm))
    # Order matters: the history and best model are written before the backup marks the epoch done.
    callbacks = [progress, backup(work)]
    if train.tensorboard and run_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(str(Path(run_dir) / "tensorboard" / "train")))
    steps = examples.counts["train"] // train.batch_size if whole else -(-examples.counts["train"] // train.batch_size)
    callbacks.append(keras_callback("train", train.epochs, steps, report=report))
    ended = progress.stopping()
    if not ended:
        try:
            model.fit(data, validation_data=validation, epochs=train.epochs, initial_epoch=initial,
                      callbacks=callbacks, verbose=0)
        except Exception as exc:
            lost = lost_worker(exc, where) if where is not None else None
            if lost is None:
                raise
            raise lost from None
        ended = progress.ended or "epochs"
    result = _result(progress, ended, classes, out_dir, schedule, train, end, warm, shift, speed,
                     hyperparameters.values if setting["precision"] != "float32" else None)
    if work_dir is None:
        shutil.rmtree(work)  # called outside the runner: nothing to resume later
    return result


def _result(progress, ended: str, classes: tuple[str, ...], out_dir: Path, schedule: str, train: TrainConfig,
            end: float | None, warm: str | None, shift: int, speed: dict | None = None,
            mixed: dict | None = None) -> Model:
    """The Model of a training that ended: its best epoch's model copied into `out_dir`, its history and plan.
    A model trained under a mixed policy chosen by the probe (`mixed`: its hyperparameter values) is kept
    computing in float32."""
    rows = progress.rows
    history = {k: [row[k] for row in rows] for k in rows[0] if k not in ("epoch", "seconds", "learning_rate")}
    plan = {"schedule": schedule, "epochs_most": train.epochs, "epochs_run": len(rows), "ended": ended,
            "best_epoch": progress.best_epoch + 1, "epoch_seconds": [row["seconds"] for row in rows],
            "learning_rates": [row.get("learning_rate") for row in rows],
            "end": round(end, 2) if end is not None else None, "warm_start": warm is not None,
            "plateau_epochs": progress.plateau, "speed": speed, "shift": shift}
    result = Model(uri=str(out_dir), fingerprint="", history=history, classes=classes, plan=plan)
    if mixed is None:
        shutil.copyfile(progress.best_path, result.path)
    else:
        from components.cnn import in_float32

        in_float32(progress.best_path, mixed, len(classes)).save(result.path)
    return result


def summarize(model: Model | None, info: dict) -> dict:
    """The run summary's `training` section; `tensorboard` when this run trained (a cached train logs nothing)."""
    logs = Path(info["run_dir"]) / "tensorboard"
    return {"training": model and {"history": model.history, "model": model.path, "plan": model.plan,
                                   "tensorboard": str(logs) if logs.is_dir() else None}}


def _params(cfg, out, metadata) -> dict:
    planned = dataclasses.replace(cfg.train, epochs=planned_epochs(cfg), schedule=planned_schedule(cfg))
    return {"seed": cfg.seed, "budget": cfg.budget_seconds, "train": planned}


def _member(train: TrainConfig, **_) -> str:
    """Which worker of a multi-worker training this is: part of train's cache key, so that the workers training
    together on a shared root do not wait for each other's output."""
    where = multi_worker(train.distribute)
    return where.member if where else ""


def _gate(model: Model, cfg):
    """A worker of a multi-worker training other than the chief ends once trained; the chief goes on."""
    where = multi_worker(cfg.train.distribute)
    return Stop("trained") if where is not None and not where.chief else None


# 6: a long budgeted training moves its images (train.shift unset)
COMPONENT = Component(name="train", fn=train, inputs=(Examples, Schema, HyperParameters), output=Model, version="6",
                      settings=TrainConfig, params=_params, summary=summarize, report=train_report.report_section,
                      source_key=_member, gate=_gate)
