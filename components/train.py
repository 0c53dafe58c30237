"""Train: fits the CNN with the best hyperparameters, keeping the best checkpoint and stopping early."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from pipeline.artifacts import Examples, HyperParameters, Model
from pipeline.config import TrainConfig
from pipeline.runner import Component

log = logging.getLogger("pipeline")
MONITOR = "val_accuracy"


def distribution_strategy():
    """MirroredStrategy over all GPUs when there is more than one, else the default strategy."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def _epoch_logger():
    import keras

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            metrics = " ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items()))
            log.info("  epoch %d %s (%.1fs)", epoch + 1, metrics, time.monotonic() - self.start)

    return EpochLog()


def train(examples: Examples, hyperparameters: HyperParameters, *, out_dir: Path, train: TrainConfig,
          seed: int) -> Model:
    """Trains on the train split, validating on eval; saves the best epoch's model as `model.keras`.

    Example:
        >>> model = train(examples, hp, out_dir=Path("/tmp/model"), train=TrainConfig(epochs=2), seed=42)
        >>> model.history["val_accuracy"]
        [0.81, 0.85]
    """
    import keras

    from components.cnn import build_model
    from components.inputs import make_dataset

    keras.utils.set_random_seed(seed)
    data = make_dataset(examples.file_pattern("train"), train.batch_size, shuffle=True, seed=seed,
                        shuffle_buffer=max(1, examples.counts["train"]))
    validation = make_dataset(examples.file_pattern("eval"), train.batch_size)
    with distribution_strategy().scope():
        model = build_model(hyperparameters.values)
    best = out_dir / "checkpoints" / "best.keras"
    best.parent.mkdir(parents=True)
    callbacks = [
        keras.callbacks.ModelCheckpoint(str(best), monitor=MONITOR, mode="max", save_best_only=True),
        keras.callbacks.EarlyStopping(monitor=MONITOR, mode="max", patience=train.patience,
                                      restore_best_weights=True),
        _epoch_logger(),
    ]
    history = model.fit(data, validation_data=validation, epochs=train.epochs, callbacks=callbacks, verbose=0)
    result = Model(uri=str(out_dir), fingerprint="",
                   history={k: [float(v) for v in vs] for k, vs in history.history.items()})
    model.save(result.path)  # EarlyStopping restored the best weights
    return result


COMPONENT = Component(name="train", fn=train, inputs=(Examples, HyperParameters), output=Model, version="1")
