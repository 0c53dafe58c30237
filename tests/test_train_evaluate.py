"""Tests of train (tf.data input, best checkpoint, early stopping) and evaluate (blessing)."""
from pathlib import Path

import numpy as np
import pytest

from components.evaluate import evaluate
from components.inputs import make_dataset


def test_input_yields_uint8_images_and_one_hot_labels(examples):
    images, labels = next(iter(make_dataset(examples.file_pattern("test"), 16)))
    assert images.dtype.name == "uint8" and images.shape == (16, 784)
    assert labels.shape == (16, 10) and np.allclose(labels.numpy().sum(axis=1), 1)
    assert sum(len(b[0]) for b in make_dataset(examples.file_pattern("train"), 50, shuffle=True, seed=1)) \
        == examples.counts["train"]


def test_shuffle_is_seeded(examples):
    def first_batch(seed):
        return next(iter(make_dataset(examples.file_pattern("train"), 8, shuffle=True, seed=seed)))[0].numpy()

    np.testing.assert_array_equal(first_batch(3), first_batch(3))
    assert not np.array_equal(first_batch(3), first_batch(4))


def test_missing_files():
    with pytest.raises(FileNotFoundError, match=r"no TFRecord files match /nowhere"):
        make_dataset("/nowhere/*.gz", 8)


def test_training_learns_and_keeps_the_best_epoch(model, examples):
    import keras

    history = model.history
    assert len(history["val_accuracy"]) >= 3 and max(history["val_accuracy"]) > 0.5  # chance is 0.1
    assert history["loss"][-1] < history["loss"][0]
    kept = keras.models.load_model(model.path)
    scores = kept.evaluate(make_dataset(examples.file_pattern("eval"), 32), verbose=0, return_dict=True)
    assert scores["accuracy"] == pytest.approx(max(history["val_accuracy"]), abs=1e-6)
    assert sorted(p.name for p in Path(model.uri).iterdir()) == ["model.keras"]  # no work files left behind


def test_early_stopping_ends_after_patience(examples, tmp_path, seed):
    from components.cnn import REFERENCE
    from components.train import train
    from pipeline.artifacts import HyperParameters
    from pipeline.config import TrainConfig

    # A learning rate this small barely moves: validation accuracy soon stops improving.
    hp = HyperParameters(uri="", fingerprint="x", tuner="none", values={**REFERENCE, "learning_rate": 1e-4},
                         trials=())
    history = train(examples, hp, out_dir=tmp_path, train=TrainConfig(epochs=30, patience=1, batch_size=64),
                    seed=seed).history["val_accuracy"]
    best = history.index(max(history))
    assert len(history) < 30 and len(history) == best + 2  # one epoch of patience after the best


def test_evaluate_blesses_by_threshold(model, examples, tmp_path):
    good = evaluate(model, examples, out_dir=tmp_path, min_accuracy=0.3)
    assert good.blessed and 0.3 <= good.accuracy <= 1 and good.loss > 0
    assert good.reasons == (f"accuracy {good.accuracy:.4f} >= min_accuracy 0.3000",)
    strict = evaluate(model, examples, out_dir=tmp_path, min_accuracy=1.01)
    assert not strict.blessed and strict.accuracy == pytest.approx(good.accuracy)
    assert strict.reasons == (f"accuracy {good.accuracy:.4f} < min_accuracy 1.0100",)
