"""The CNN search space: a KerasTuner HyperModel whose default values are the user's reference model."""
from __future__ import annotations

from typing import Any

import keras
import keras_tuner as kt

PIXELS, SIDE, CLASSES = 28 * 28, 28, 10
SPACE_VERSION = "1"  # bump when the search space changes: earlier search results are then not reused

# The reference model: Conv(32,3)-Pool-Drop(.2)-Conv(64,3)-Pool-Drop(.2)-Dense(128)-Drop(.5), Adam 1e-3.
REFERENCE = {"conv_blocks": 2, "filters_1": 32, "filters_2": 64, "kernel_size": 3, "batch_norm": False,
             "conv_dropout": 0.2, "dense_units": 128, "dense_dropout": 0.5, "learning_rate": 1e-3}


def _conv_block(x, filters: int, kernel: int, batch_norm: bool, padding: str, dropout: float, index: int):
    if batch_norm:
        x = keras.layers.Conv2D(filters, kernel, padding=padding, use_bias=False, name=f"conv_{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn_{index}")(x)
        x = keras.layers.Activation("relu", name=f"relu_{index}")(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, padding=padding, activation="relu", name=f"conv_{index}")(x)
    x = keras.layers.MaxPooling2D(2, name=f"pool_{index}")(x)
    return keras.layers.Dropout(dropout, name=f"dropout_{index}")(x)


class CNNHyperModel(kt.HyperModel):
    """1–3 conv blocks over raw uint8 pixels; scaling and reshaping are layers, so they ship in the graph."""

    def __init__(self, mixed_precision: bool = False, classes: int = CLASSES, **kwargs):
        super().__init__(**kwargs)
        self.mixed_precision, self.classes = mixed_precision, classes

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
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                      loss="categorical_crossentropy", metrics=["accuracy"])
        return model


class MixedPrecision:
    """Builds models under the `mixed_float16` policy inside this context (float16 compute, float32 weights).

    Keras wraps the optimizer in a LossScaleOptimizer for such a model. The global policy is restored
    on exit, so other models in the process are unaffected.
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        self.previous = keras.config.dtype_policy()
        if self.enabled:
            keras.config.set_dtype_policy("mixed_float16")
        return self

    def __exit__(self, *exc):
        keras.config.set_dtype_policy(self.previous)


def build_model(values: dict[str, Any], mixed_precision: bool = False, classes: int = CLASSES) -> keras.Model:
    """Builds the model for fixed hyperparameter values (e.g. the best of a search, or REFERENCE) with a
    `classes`-way softmax head."""
    hp = kt.HyperParameters()
    for name, value in values.items():
        if not name.startswith("tuner/"):
            hp.Fixed(name, value)
    return CNNHyperModel(mixed_precision=mixed_precision, classes=classes).build(hp)
