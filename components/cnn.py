"""The CNN search space: a KerasTuner HyperModel whose default values are the user's reference model."""
from __future__ import annotations

import os
from typing import Any

import keras
import keras_tuner as kt

PIXELS, SIDE, CLASSES = 28 * 28, 28, 10
SPACE_VERSION = "2"  # bump when the search space changes: earlier search results are then not reused

# The reference model: Conv(32,3)-Pool-Drop(.2)-Conv(64,3)-Pool-Drop(.2)-Dense(128)-Drop(.5), Adam 1e-3.
REFERENCE = {"conv_blocks": 2, "filters_1": 32, "filters_2": 64, "kernel_size": 3, "batch_norm": False,
             "conv_dropout": 0.2, "dense_units": 128, "dense_dropout": 0.5, "learning_rate": 1e-3}


def _conv_block(x, filters: int, kernel: int, batch_norm: bool, padding: str, dropout: float, index: int):
    if batch_norm:
        x = keras.layers.Conv2D(filters, kernel, padding=padding, use_bias=False, name=f"conv_{index}")(x)
        # Momentum 0.9, not Keras's 0.99: a trial's 2 short epochs would otherwise be scored with moving statistics
        # still near their initial values, ranking every batch-norm model far below what it is.
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn_{index}")(x)
        x = keras.layers.Activation("relu", name=f"relu_{index}")(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, padding=padding, activation="relu", name=f"conv_{index}")(x)
    x = keras.layers.MaxPooling2D(2, name=f"pool_{index}")(x)
    return keras.layers.Dropout(dropout, name=f"dropout_{index}")(x)


class CNNHyperModel(kt.HyperModel):
    """1–3 conv blocks over raw uint8 pixels; scaling and reshaping are layers, so they ship in the graph."""

    def __init__(self, mixed_precision: bool | str = False, classes: int = CLASSES, label_smoothing: float = 0.0,
                 steps_per_execution: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.mixed_precision, self.classes = mixed_precision, classes
        self.label_smoothing, self.steps_per_execution = label_smoothing, steps_per_execution

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        with MixedPrecision(self.mixed_precision):
            return self._layers(hp)

    def _layers(self, hp: kt.HyperParameters) -> keras.Model:
        blocks = hp.Int("conv_blocks", 1, 3, default=REFERENCE["conv_blocks"])
        kernel = hp.Choice("kernel_size", [3, 5], default=REFERENCE["kernel_size"])
        batch_norm = hp.Boolean("batch_norm", default=REFERENCE["batch_norm"])
        conv_dropout = hp.Float("conv_dropout", 0.0, 0.4, step=0.1, default=REFERENCE["conv_dropout"])
        inputs = keras.Input(shape=(PIXELS,), dtype="uint8", name="image")
        x = keras.layers.Rescaling(1.0 / 255, name="scale")(inputs)
        x = keras.layers.Reshape((SIDE, SIDE, 1), name="to_image")(x)
        choices = {1: [16, 32, 64], 2: [32, 64, 128], 3: [64, 128]}
        for i in range(1, blocks + 1):
            filters = hp.Choice(f"filters_{i}", choices[i], default=REFERENCE.get(f"filters_{i}", choices[i][0]))
            # Blocks 1-2 use valid padding, as the reference does; a third needs 'same' to fit a 5x5 kernel.
            x = _conv_block(x, filters, kernel, batch_norm, "valid" if i < 3 else "same", conv_dropout, i)
        x = keras.layers.Flatten(name="flatten")(x)
        x = keras.layers.Dense(hp.Choice("dense_units", [64, 128, 256], default=REFERENCE["dense_units"]),
                               activation="relu", name="dense")(x)
        x = keras.layers.Dropout(hp.Float("dense_dropout", 0.2, 0.6, step=0.1, default=REFERENCE["dense_dropout"]),
                                 name="dropout_dense")(x)
        # float32 probabilities even under mixed precision: softmax in float16 loses the small classes.
        outputs = keras.layers.Dense(self.classes, activation="softmax", name="probabilities", dtype="float32")(x)
        model = keras.Model(inputs, outputs, name="cnn")
        learning_rate = hp.Float("learning_rate", 1e-4, 1e-2, sampling="log", default=REFERENCE["learning_rate"])
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=self.label_smoothing) if self.label_smoothing \
            else "categorical_crossentropy"
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss=loss, metrics=["accuracy"],
                      steps_per_execution=self.steps_per_execution)
        return model


class MixedPrecision:
    """Builds models under a mixed policy inside this context (float16 or bfloat16 compute, float32 weights):
    `mixed_float16` for True, the policy named by a string (e.g. `mixed_bfloat16`), none for False.

    Keras wraps the optimizer in a LossScaleOptimizer for a float16 model. The global policy is restored
    on exit, so other models in the process are unaffected.
    """

    def __init__(self, enabled: bool | str):
        self.policy = enabled if isinstance(enabled, str) else "mixed_float16" if enabled else None

    def __enter__(self):
        self.previous = keras.config.dtype_policy()
        if self.policy:
            keras.config.set_dtype_policy(self.policy)
        return self

    def __exit__(self, *exc):
        keras.config.set_dtype_policy(self.previous)


def build_model(values: dict[str, Any], mixed_precision: bool | str = False, classes: int = CLASSES,
                label_smoothing: float = 0.0, steps_per_execution: int = 1) -> keras.Model:
    """Builds the model for fixed hyperparameter values (e.g. the best of a search, or REFERENCE) with a
    `classes`-way softmax head, compiled with `label_smoothing` and `steps_per_execution`.

    Example (not run as a doctest: building a model loads TensorFlow, which docstring examples must not):
        model = build_model(REFERENCE, mixed_precision="mixed_bfloat16")  # bfloat16 compute, float32 weights
    """
    hp = kt.HyperParameters()
    for name, value in values.items():
        if not name.startswith("tuner/"):
            hp.Fixed(name, value)
    return CNNHyperModel(mixed_precision=mixed_precision, classes=classes, label_smoothing=label_smoothing,
                         steps_per_execution=steps_per_execution).build(hp)


def in_float32(model: keras.Model | str, values: dict[str, Any], classes: int) -> keras.Model:
    """`model` (or the one saved at that path) computing in float32: the same weights in a model built without a
    mixed policy (a model trained in bfloat16 is evaluated and served in float32, so it loses no accuracy to
    rounding)."""
    model = keras.models.load_model(model) if isinstance(model, (str, os.PathLike)) else model
    if all(layer.compute_dtype in ("float32", None) for layer in model.layers if hasattr(layer, "compute_dtype")):
        return model
    plain = build_model(values, classes=classes)
    plain.set_weights(model.get_weights())
    return plain
