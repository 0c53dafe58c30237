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


def test_shift_moves_each_image_by_at_most_the_shift_filling_with_zero(examples):
    plain = next(iter(make_dataset(examples.file_pattern("test"), 64)))[0].numpy().reshape(-1, 28, 28)
    shifted = make_dataset(examples.file_pattern("test"), 64, shift=2, seed=5)
    # The moved batches' spec is the unmoved ones' (an eager batch always has its shape: the spec is what a model sees).
    assert shifted.element_spec[0].shape == make_dataset(examples.file_pattern("test"), 64).element_spec[0].shape
    assert shifted.element_spec[0].shape[1] == 784
    moved = next(iter(shifted))[0].numpy().reshape(-1, 28, 28)
    offsets = set()
    for before, after in zip(plain, moved):
        padded = np.pad(before, 2)
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if np.array_equal(padded[dy:dy + 28, dx:dx + 28], after)]
        assert found, "an image that is not its original moved by up to 2 pixels"
        offsets.add(found[0])
    assert len(offsets) > 5  # each image its own move, in both directions


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


def test_training_with_shifted_images_and_smoothed_labels_learns(examples, generic_schema, tmp_path, seed):
    import keras

    from components.cnn import REFERENCE
    from components.train import TrainConfig, train
    from components.tune import HyperParameters

    hp = HyperParameters(uri="", fingerprint="x", tuner="none", values=dict(REFERENCE), trials=())
    model = train(examples, generic_schema, hp, out_dir=tmp_path, seed=seed,
                  train=TrainConfig(epochs=3, batch_size=64, shift=2, label_smoothing=0.1))
    assert max(model.history["val_accuracy"]) > 0.5  # chance is 0.1
    assert keras.models.load_model(model.path).loss.get_config()["label_smoothing"] == pytest.approx(0.1)


def test_early_stopping_ends_after_patience(examples, generic_schema, tmp_path, seed):
    from components.cnn import REFERENCE
    from components.train import train
    from components.tune import HyperParameters
    from components.train import TrainConfig

    # A learning rate of 0 never moves the weights: the first epoch's score is never beaten, on any machine.
    hp = HyperParameters(uri="", fingerprint="x", tuner="none", values={**REFERENCE, "learning_rate": 0.0},
                         trials=())
    history = train(examples, generic_schema, hp, out_dir=tmp_path, train=TrainConfig(epochs=30, patience=1, batch_size=64),
                    seed=seed).history["val_accuracy"]
    assert len(history) == 2 and history[0] == history[1]  # the best epoch, then one epoch of patience


def test_a_loss_that_becomes_nan_fails_training_naming_the_epoch(examples, generic_schema, tmp_path, seed):
    from components.cnn import REFERENCE
    from components.train import train
    from components.tune import HyperParameters
    from engine.errors import TrainingDiverged
    from components.train import TrainConfig

    # An infinite learning rate makes the first update's weights non-finite on any machine: the loss is NaN
    # from the first epoch, whose evaluation scores chance and would otherwise be kept as the best model.
    hp = HyperParameters(uri="", fingerprint="x", tuner="none", values={**REFERENCE, "learning_rate": float("inf")},
                         trials=())
    with pytest.raises(TrainingDiverged, match=r"^train: epoch 1: loss is nan.*training diverged: lower the "
                                               r"learning rate"):
        train(examples, generic_schema, hp, out_dir=tmp_path / "out", train=TrainConfig(epochs=3, batch_size=64),
              seed=seed, work_dir=tmp_path / "work")
    assert not (tmp_path / "work" / "history.json").exists()  # nothing of the diverged epoch was kept


def test_evaluate_blesses_by_threshold(model, examples, tmp_path):
    good = evaluate(model, examples, None, out_dir=tmp_path, min_accuracy=0.3)
    assert good.blessed and 0.3 <= good.accuracy <= 1 and good.loss > 0
    assert good.reasons == (f"accuracy {good.accuracy:.4f} >= min_accuracy 0.3000",
                            "no baseline: only absolute thresholds apply")
    assert good.baseline_version is None and good.baseline_accuracy is None
    strict = evaluate(model, examples, None, out_dir=tmp_path, min_accuracy=1.01)
    assert not strict.blessed and strict.accuracy == pytest.approx(good.accuracy)
    assert strict.reasons[0] == f"accuracy {good.accuracy:.4f} < min_accuracy 1.0100"
    assert strict.failed == (strict.reasons[0],) and good.failed == ()
    # The loss matches Keras's own evaluation of the same model on the same split.
    import keras

    keras_loss = keras.models.load_model(model.path).evaluate(make_dataset(examples.file_pattern("test"), 64),
                                                             verbose=0, return_dict=True)["loss"]
    assert good.loss == pytest.approx(keras_loss, rel=1e-3)


def test_per_class_metrics_and_confusion_matrix():
    from components.evaluate import per_class

    labels = np.array([0, 0, 1, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 0, 2])
    rows, matrix = per_class(labels, predicted)
    assert matrix[0][:3] == [1, 1, 0] and matrix[1][:3] == [1, 2, 0] and matrix[2][:3] == [0, 0, 1]
    assert sum(map(sum, matrix)) == 6
    intervals = ("precision_low", "precision_high", "recall_low", "recall_high")
    assert {k: v for k, v in rows[1].items() if k not in intervals} == {
        "class": 1, "name": "1", "precision": round(2 / 3, 4), "recall": round(2 / 3, 4), "f1": round(2 / 3, 4),
        "support": 3}
    # 2 of 3: the Wilson interval, wide on three images
    assert rows[1]["recall_low"] < 0.3 and rows[1]["recall_high"] > 0.9 and rows[1]["precision_low"] < 2 / 3
    assert rows[0]["precision"] == 0.5 and rows[0]["recall"] == 0.5 and rows[2]["f1"] == 1.0
    assert {k: rows[5][k] for k in ("precision", "recall", "f1", "support", "recall_low", "recall_high")} == {
        "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "recall_low": 0.0, "recall_high": 1.0}


def test_min_class_recall_names_the_weak_classes(model, examples, tmp_path):
    ev = evaluate(model, examples, None, out_dir=tmp_path, min_accuracy=0.0, min_class_recall=1.01)
    assert not ev.blessed and len(ev.per_class) == 10 and len(ev.confusion_matrix) == 10
    assert ev.reasons[1].startswith("recall below min_class_recall 1.0100 for class 0 (")
    assert sum(map(sum, ev.confusion_matrix)) == examples.counts["test"]
