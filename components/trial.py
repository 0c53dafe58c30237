"""One tuning trial in a fresh process: TensorFlow keeps 5–15 MB per `fit` for good, so trials in one process grow."""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.child import last_error_line, supervise
from engine.failpoints import failpoint
from engine.progress import Bar, follow

OBJECTIVE = "val_accuracy"


@dataclass(frozen=True)
class TrialSpec:
    """Everything a trial process needs; plain data, passed as JSON."""

    hyperparameters: dict[str, Any]  # KerasTuner HyperParameters.get_config()
    train_pattern: str
    eval_pattern: str
    train_count: int  # the examples a trial trains on: the first train_count of the split
    batch_size: int
    seed: int
    epochs: int
    initial_epoch: int
    checkpoint: str  # where the trial's best weights go (a later Hyperband round starts from them)
    resume_from: str | None = None  # weights of the earlier trial a Hyperband round continues
    deadline: float | None = None  # time.time() at which training stops after the current batch
    distribute: str = "auto"
    mixed_precision: str = "auto"
    tensorboard: str | None = None
    classes: int = 10  # the model head's width: the schema's number of classes
    deterministic: bool = False  # op determinism (trials always read their input in order)


DISK_ERROR = "trial OSError: "  # how a trial process reports a failed write: [errno, strerror, filename] follow


def run_in_subprocess(spec: TrialSpec, work: Path, label: str = "trial") -> dict[str, Any]:
    """Runs the trial in a new Python process and returns its metrics: the best epoch's, plus `epochs_run`,
    `curve` (the validation accuracy of each epoch run, the first being `first_epoch`), `epoch_seconds` (the
    median epoch's training seconds) and `peak_mb` (the trial process's peak resident memory). On a terminal,
    a bar labelled `label` follows its batches.

    Raises:
        RuntimeError: the trial process failed; the message ends with its last error line.
    """
    work.mkdir(parents=True, exist_ok=True)
    spec_path, result_path = work / "spec.json", work / "result.json"
    spec_path.write_text(json.dumps(asdict(spec)))
    result_path.unlink(missing_ok=True)
    progress_path, errors_path = work / "progress.json", work / "stderr.log"
    progress_path.unlink(missing_ok=True)
    # A trial is one process: TF_CONFIG describes the final training's cluster, not the trial's.
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["TF_CPP_MIN_LOG_LEVEL"] = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")
    with Bar(label, total=spec.epochs, unit="batches") as bar:
        code = supervise("components.trial", [str(spec_path), str(result_path), str(progress_path)], env,
                         errors_path, watch=lambda: follow(progress_path, bar))
    if code != 0 or not result_path.is_file():
        lines = errors_path.read_text(errors="replace").splitlines()
        failed = [json.loads(line[len(DISK_ERROR):]) for line in lines if line.startswith(DISK_ERROR)]
        if failed:
            raise OSError(*failed[-1])
        raise RuntimeError(f"trial process exited with {code}: {last_error_line(errors_path)}")
    return json.loads(result_path.read_text())


def _epoch_timer(seconds: list[float]):
    """A callback appending each epoch's training seconds (without its validation) to `seconds`."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.monotonic()

        def on_test_begin(self, logs=None):
            seconds.append(time.monotonic() - self.start)

    return EpochTimer()


def _deadline_callback(deadline: float):
    import keras

    class Deadline(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if time.time() >= deadline:
                self.model.stop_training = True

    return Deadline()


def run_trial(spec: TrialSpec, progress: Path | None = None) -> dict[str, Any]:
    """Builds, trains and scores one trial's model in this process (the body of the trial process).

    With `progress`, the batches done are reported in that file for the tuner's progress bar.
    """
    import resource
    import warnings

    warnings.filterwarnings("ignore")
    import keras
    import keras_tuner as kt

    from components import checkpoint
    from components.cnn import CNNHyperModel
    from components.inputs import make_dataset
    from components.devices import distribution_strategy, input_device, mixed_precision_enabled
    from engine.progress import keras_callback

    keras.utils.set_random_seed(spec.seed)
    if spec.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    strategy = distribution_strategy(spec.distribute)
    device, whole = input_device(strategy), strategy.num_replicas_in_sync > 1
    train = make_dataset(spec.train_pattern, spec.batch_size, shuffle=True, seed=spec.seed,
                         shuffle_buffer=max(1, spec.train_count), device=device, drop_remainder=whole,
                         classes=spec.classes, limit=spec.train_count)
    evaluation = make_dataset(spec.eval_pattern, spec.batch_size, device=device, drop_remainder=whole,
                              classes=spec.classes)
    hp = kt.HyperParameters.from_config(spec.hyperparameters)
    with strategy.scope():
        model = CNNHyperModel(mixed_precision=mixed_precision_enabled(spec.mixed_precision),
                              classes=spec.classes).build(hp)
    initial_epoch = spec.initial_epoch
    if spec.resume_from and Path(spec.resume_from).is_file():
        checkpoint.load_weights(model, Path(spec.resume_from))
    else:  # e.g. the earlier round ran on another machine's disk: train this round from scratch
        initial_epoch = 0
    epoch_seconds: list[float] = []
    callbacks = [keras.callbacks.EarlyStopping(monitor=OBJECTIVE, mode="max", patience=1, restore_best_weights=True),
                 _epoch_timer(epoch_seconds)]
    if spec.deadline is not None:
        callbacks.append(_deadline_callback(spec.deadline))
    if spec.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(spec.tensorboard))
    if progress is not None:
        steps = spec.train_count // spec.batch_size if whole else -(-spec.train_count // spec.batch_size)
        callbacks.append(keras_callback("trial", spec.epochs, steps, report=progress))
    failpoint("trial.start")
    history = model.fit(train, validation_data=evaluation, epochs=spec.epochs, initial_epoch=initial_epoch,
                        callbacks=callbacks, verbose=0).history
    checkpoint.save_weights(model, Path(spec.checkpoint))  # NumPy: h5py crashed on a full disk
    failpoint("trial.end")  # trained, not yet reported: the search runs this trial again
    scores = history[OBJECTIVE]
    best = scores.index(max(scores))
    from tensorflow.python.framework import config as tf_config  # TF 2.16 has no public getter

    # The pace: the first epoch also traces the graphs, so later ones give it when there are any.
    paced = epoch_seconds[1:] or epoch_seconds
    return {**{name: float(values[best]) for name, values in history.items()}, "epochs_run": len(scores),
            "curve": [float(v) for v in scores], "first_epoch": initial_epoch,
            "epoch_seconds": round(sorted(paced)[len(paced) // 2], 3) if paced else None,
            "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "deterministic": tf_config.is_op_determinism_enabled()}


def main(argv: list[str]) -> int:
    spec_path, result_path, *progress = argv
    spec = TrialSpec(**json.loads(Path(spec_path).read_text()))
    try:
        result = run_trial(spec, Path(progress[0]) if progress else None)
        tmp = Path(result_path).with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, result_path)
    except OSError as exc:  # the tuner re-raises it as this OSError (a full disk ends the search)
        print(f"{DISK_ERROR}{json.dumps([exc.errno, exc.strerror, exc.filename])}", file=sys.stderr, flush=True)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
