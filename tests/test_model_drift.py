"""Tests of the model's view of drift: the MMD test, and predicted classes, confidence and embeddings."""
import numpy as np
import pytest

from components import drift, model_drift
from conftest import make_images
from engine.errors import DataError


def test_mmd_false_alarms_stay_near_the_level_and_a_shift_is_found():
    rng = np.random.default_rng(0)
    clean = [model_drift.mmd_test(rng.normal(size=(100, 8)), rng.normal(size=(100, 8)), rng, 200)[1]
             for _ in range(100)]
    assert np.mean(np.array(clean) < 0.05) <= 0.1 and np.median(clean) > 0.2
    mmd2, p_value = model_drift.mmd_test(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) + 0.5, rng)
    assert mmd2 > 0 and p_value < 1e-6  # far beyond every permutation: the fitted tail tells how far


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A reference model trained for an epoch on bar images (class k: a bar in row band k), saved as a
    pushed version saves it."""
    import keras

    from components.cnn import REFERENCE, build_model

    keras.utils.set_random_seed(5)  # the same weights in every run: the clean check does not rest on luck
    rng = np.random.default_rng(5)
    labels = np.arange(1000) % 10
    model = build_model(REFERENCE)
    model.fit(make_images(labels, rng).reshape(-1, 784), np.eye(10)[labels], epochs=1, batch_size=64, verbose=0)
    version = tmp_path_factory.mktemp("serving") / "1"
    version.mkdir()
    model.save(version / "model.keras")
    return model_drift.load_model(version)


def test_the_model_sees_a_semantic_shift_and_stays_quiet_on_clean_data(models):
    rng = np.random.default_rng(6)
    labels = np.arange(600) % 10
    baseline, clean = make_images(labels, rng), make_images(labels, rng)
    # Bars in columns instead of rows: the same pixel values, ink and intensity; another meaning.
    turned = np.transpose(make_images(labels, rng), (0, 2, 1))
    quiet = drift.decide(model_drift.compare(models, baseline, clean, 0.03, "model: a vs b"), 0.001)
    assert [d.feature for d in quiet] == ["predicted_class", "confidence", "embedding"]
    assert not any(d.drifted for d in quiet), quiet
    found = drift.decide(model_drift.compare(models, baseline, turned, 0.03, "model: a vs c"), 0.001)
    assert {d.feature for d in found if d.drifted} >= {"embedding"}, found
    embedding = found[2]
    assert embedding.test == "MMD" and embedding.p_value <= embedding.alpha and embedding.distance > 0


def test_a_directory_without_a_pushed_model(tmp_path):
    with pytest.raises(DataError, match=r"not a pushed model version \(no model.keras\)"):
        model_drift.load_model(tmp_path)


def test_with_the_baselines_labels_the_model_estimates_the_classes_mix_of_an_unlabeled_batch(models):
    rng = np.random.default_rng(7)
    labels = np.arange(3000) % 10
    baseline = make_images(labels, rng)
    mixed = labels[(labels != 3) | (rng.random(3000) < 0.2)]  # class 3 at a fifth of its share, no labels
    shift = np.max(np.abs(np.bincount(mixed, minlength=10) / len(mixed) - 0.1))
    quiet = drift.decide(model_drift.compare(models, baseline, make_images(labels, rng), 0.03, "m", 0, labels),
                         0.001)
    assert [d.feature for d in quiet] == ["class_mix", "confidence", "embedding"]
    assert quiet[0].test == "BBSE z-test" and not any(d.drifted for d in quiet), quiet
    found = drift.decide(model_drift.compare(models, baseline, make_images(mixed, rng), 0.03, "m", 0, labels), 0.001)
    assert found[0].drifted and found[0].distance == pytest.approx(shift, abs=0.01), found[0]
