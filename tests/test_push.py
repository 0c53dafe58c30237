"""Tests of push: versioned SavedModels with in-graph preprocessing, written atomically."""
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from components.evaluate import evaluate
from components.push import push
from pipeline.errors import PipelineError


@pytest.fixture(scope="module")
def blessed(model, examples, tmp_path_factory):
    return evaluate(model, examples, out_dir=tmp_path_factory.mktemp("eval"), min_accuracy=0.0)


def test_pushed_model_serves_raw_uint8_images(model, blessed, tmp_path):
    pushed = push(model, blessed, out_dir=tmp_path / "x", serving_dir=tmp_path / "serving")
    assert pushed.version == 1 and pushed.uri == str(tmp_path / "serving" / "1") and pushed.intact()
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    served = tf.saved_model.load(pushed.uri).signatures["serving_default"](images=tf.constant(images))
    expected = keras.models.load_model(model.path).predict(images.reshape(5, 784), verbose=0)
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(served["class_ids"].numpy(), expected.argmax(axis=1))
    info = json.loads((Path(pushed.uri) / "model_info.json").read_text())
    assert info["model_fingerprint"] == model.fingerprint


def test_versions_increase_and_never_overwrite(model, blessed, tmp_path):
    serving = tmp_path / "serving"
    (serving / "7").mkdir(parents=True)
    (serving / "7" / "saved_model.pb").write_bytes(b"older")
    assert push(model, blessed, out_dir=tmp_path, serving_dir=serving).version == 8
    assert (serving / "7" / "saved_model.pb").read_bytes() == b"older"
    assert sorted(p.name for p in serving.iterdir()) == ["7", "8"]  # no staging left behind


def test_unblessed_model_is_refused(model, blessed, tmp_path):
    import dataclasses

    refused = dataclasses.replace(blessed, blessed=False, reasons=("accuracy 0.5 < min_accuracy 0.9",))
    with pytest.raises(PipelineError, match=r"is not blessed \(accuracy 0.5 < min_accuracy 0.9\)"):
        push(model, refused, out_dir=tmp_path, serving_dir=tmp_path / "serving")
    assert not (tmp_path / "serving").exists()


def test_unwritable_serving_dir(model, blessed, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(PipelineError, match=r"file/serving: cannot write the serving directory"):
        push(model, blessed, out_dir=tmp_path, serving_dir=tmp_path / "file" / "serving")
