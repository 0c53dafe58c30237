"""Tests of push: versioned SavedModels with in-graph preprocessing, written atomically."""
import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from components.evaluate import evaluate
from components.push import push
from engine.errors import PipelineError


@pytest.fixture(scope="module")
def blessed(model, examples, tmp_path_factory):
    return evaluate(model, examples, None, out_dir=tmp_path_factory.mktemp("eval"), min_accuracy=0.0)


@pytest.fixture(scope="module")
def pushed(model, blessed, examples, tmp_path_factory):
    root = tmp_path_factory.mktemp("push")
    (root / "out").mkdir()
    return push(model, blessed, examples, out_dir=root / "out", serving_dir=root / "serving")


def test_pushed_model_serves_raw_uint8_images_in_both_shapes(model, pushed, examples):
    assert pushed.version == 1 and Path(pushed.uri).name == "1" and pushed.intact()
    checked = min(100, examples.counts["test"])
    assert pushed.infra_check.startswith(f"served {checked} test images in a fresh process: same classes")
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    serve = tf.saved_model.load(pushed.uri).signatures["serving_default"]
    expected = keras.models.load_model(model.path).predict(images.reshape(5, 784), verbose=0)
    for shaped in (images, images[..., None]):
        served = serve(images=tf.constant(shaped))
        np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
        np.testing.assert_array_equal(served["class_ids"].numpy(), expected.argmax(axis=1))
    info = json.loads((Path(pushed.uri) / "model_info.json").read_text())
    assert info["model_fingerprint"] == model.fingerprint == pushed.model_fingerprint
    kept = keras.models.load_model(Path(pushed.uri) / "model.keras")  # the .keras file is kept beside
    np.testing.assert_allclose(kept.predict(images.reshape(5, 784), verbose=0), expected, atol=1e-6)


def test_png_signature_matches_the_uint8_one(pushed):
    images = np.random.default_rng(1).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    signatures = tf.saved_model.load(pushed.uri).signatures
    png = tf.constant([tf.io.encode_png(image).numpy() for image in images])
    from_png = signatures["serving_png"](png=png)
    from_pixels = signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_array_equal(from_png["class_ids"].numpy(), from_pixels["class_ids"].numpy())
    np.testing.assert_allclose(from_png["probabilities"].numpy(), from_pixels["probabilities"].numpy(), atol=1e-6)
    wrong_size = tf.constant([tf.io.encode_png(np.zeros((14, 14, 1), np.uint8)).numpy()])
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected 28x28 images"):
        signatures["serving_png"](png=wrong_size)


def test_infra_check_refuses_an_export_that_answers_differently(pushed, examples, tmp_path):
    from components.cnn import REFERENCE, build_model
    from components.evaluate import test_arrays
    from components.push import infra_check

    other = tmp_path / "other.keras"
    build_model(REFERENCE).save(other)  # untrained: not the model that was exported
    with pytest.raises(PipelineError, match=r"infra check: the export answers differently .* nothing pushed"):
        infra_check(Path(pushed.uri), str(other), test_arrays(examples, 100)[0], tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "saved_model.pb").write_bytes(b"not a SavedModel")
    with pytest.raises(PipelineError, match=r"infra check: .*broken does not serve in a fresh process"):
        infra_check(tmp_path / "broken", str(other), test_arrays(examples, 10)[0], tmp_path)


def test_versions_increase_and_never_overwrite(model, blessed, examples, tmp_path):
    serving = tmp_path / "serving"
    (serving / "7").mkdir(parents=True)
    (serving / "7" / "saved_model.pb").write_bytes(b"older")
    from components.versions import serving_baseline

    # Evaluated against version 7 (as the run's evaluate would have been): push decides nothing again.
    judged = dataclasses.replace(blessed, baseline_fingerprint=serving_baseline(serving, model.fingerprint).fingerprint)
    assert push(model, judged, examples, out_dir=tmp_path, serving_dir=serving).version == 8
    assert (serving / "7" / "saved_model.pb").read_bytes() == b"older"
    assert sorted(p.name for p in serving.iterdir()) == ["7", "8"]  # no staging left behind


def test_unblessed_model_is_refused(model, blessed, examples, tmp_path):
    import dataclasses

    refused = dataclasses.replace(blessed, blessed=False, reasons=("accuracy 0.5 < min_accuracy 0.9",))
    with pytest.raises(PipelineError, match=r"is not blessed \(accuracy 0.5 < min_accuracy 0.9\)"):
        push(model, refused, examples, out_dir=tmp_path, serving_dir=tmp_path / "serving")
    assert not (tmp_path / "serving").exists()


def test_unwritable_serving_dir(model, blessed, examples, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(PipelineError, match=r"file/serving: cannot write the serving directory"):
        push(model, blessed, examples, out_dir=tmp_path, serving_dir=tmp_path / "file" / "serving")


def test_regression_against_the_serving_model_is_not_blessed(model, blessed, pushed, examples, tmp_path):
    import dataclasses

    from components.cnn import REFERENCE, build_model
    from components.train import Model

    same = evaluate(dataclasses.replace(model, fingerprint="retrained"), examples, pushed, out_dir=tmp_path,
                    min_accuracy=0.0)
    assert same.blessed and same.baseline_version == 1 and same.baseline_accuracy == pytest.approx(same.accuracy)
    assert same.reasons[1].startswith(f"accuracy {same.accuracy:.4f} vs baseline version 1 ")
    assert "within max_regression 0.0050" in same.reasons[1]

    (tmp_path / "weak").mkdir()
    build_model(REFERENCE).save(tmp_path / "weak" / "model.keras")  # untrained: about chance
    weak = Model(uri=str(tmp_path / "weak"), fingerprint="weak", history={})
    worse = evaluate(weak, examples, pushed, out_dir=tmp_path, min_accuracy=0.0)
    assert not worse.blessed and worse.reasons[0].startswith("accuracy") and ">=" in worse.reasons[0]
    assert "beyond max_regression 0.0050" in worse.reasons[1]
    # The baseline is the served model's score, not the candidate's: the weak model is measured against it.
    assert worse.baseline_accuracy == pytest.approx(blessed.accuracy) and worse.accuracy < blessed.accuracy - 0.005


def test_a_version_pushed_after_evaluation_is_the_baseline_push_decides_against(model, blessed, examples, tmp_path):
    """Two builds evaluated before either pushed (both saw no baseline): the second to push is judged again,
    under the serving directory's lock, against the version the first pushed."""
    from components.cnn import REFERENCE, build_model
    from components.train import Model
    from engine.errors import NotBlessed

    serving = tmp_path / "serving"
    (tmp_path / "weak").mkdir()
    build_model(REFERENCE).save(tmp_path / "weak" / "model.keras")  # untrained: about chance
    weak = Model(uri=str(tmp_path / "weak"), fingerprint="weak", history={})
    weak_alone = evaluate(weak, examples, None, out_dir=tmp_path, min_accuracy=0.0)
    assert weak_alone.blessed and weak_alone.baseline_fingerprint == ""  # nothing served when it was judged
    first = push(model, blessed, examples, out_dir=tmp_path, serving_dir=serving)
    assert first.version == 1 and first.recheck == ""
    with pytest.raises(NotBlessed, match=r"^model not blessed: version 1 of .*serving was pushed after this model "
                                         r"was evaluated; accuracy .* vs version 1 .* beyond max_regression 0.0050"):
        push(weak, weak_alone, examples, out_dir=tmp_path, serving_dir=serving)
    assert sorted(p.name for p in serving.iterdir()) == ["1"]
    # A model as good as the one pushed meanwhile goes on, and says what it was decided against.
    equal = push(dataclasses.replace(model, fingerprint="retrained"), blessed, examples, out_dir=tmp_path,
                 serving_dir=serving)
    assert equal.version == 2 and equal.recheck.startswith("decided again against version 1, pushed after evaluation")
    assert json.loads((serving / "2" / "model_info.json").read_text())["recheck"] == equal.recheck


def test_a_model_of_data_delivered_with_the_other_polarity_does_not_replace_the_serving_one(model, blessed, examples,
                                                                                           tmp_path):
    """One span arrived dark on light and `data.invert auto` turned it around: the model it trained inverts
    its inputs, so the clients of the version serving now, which send light ink on dark, would be misread."""
    from engine.errors import NotBlessed

    serving = tmp_path / "serving"
    push(model, blessed, examples, out_dir=tmp_path, serving_dir=serving)
    flipped = dataclasses.replace(examples, inverted=True)
    with pytest.raises(NotBlessed, match=r"^model not blessed: version 1 of .* takes images of light ink on a dark "
                                         r"background, this model's data came as dark ink on a light background"):
        push(dataclasses.replace(model, fingerprint="retrained"), blessed, flipped, out_dir=tmp_path,
             serving_dir=serving)
    assert sorted(p.name for p in serving.iterdir()) == ["1"]


def test_a_reader_never_sees_a_partial_version(model, blessed, examples, tmp_path):
    import threading

    from engine.errors import DataError
    from pipeline.serving import latest_version

    serving = tmp_path / "serving"
    problems, stop, seen = [], threading.Event(), set()

    def read_in_a_loop():
        while not stop.is_set():
            try:
                for version in serving.iterdir() if serving.is_dir() else []:
                    if version.name.isdigit():
                        seen.add(version.name)
                        files = {p.name for p in version.iterdir()}
                        if not {"saved_model.pb", "variables", "model_info.json", "model.keras"} <= files:
                            problems.append((version.name, sorted(files)))
                latest_version(serving)
            except DataError as exc:
                if "no pushed model version" not in str(exc) or seen:  # only before the first version
                    problems.append(("latest_version", str(exc)))
            except Exception as exc:  # anything else the reader meets is a failure of the test, not ignored
                problems.append(("reader", repr(exc)))

    reader = threading.Thread(target=read_in_a_loop)
    reader.start()
    try:
        for fingerprint in ("first", "retrained"):  # two models: the same one is never pushed twice in a row
            push(dataclasses.replace(model, fingerprint=fingerprint), blessed, examples, out_dir=tmp_path,
                 serving_dir=serving)
    finally:
        stop.set()
        reader.join()
    assert "1" in seen and problems == []  # the reader met versions while the second push ran
    assert sorted(p.name for p in serving.iterdir()) == ["1", "2"]


def test_a_push_repeated_after_a_kill_returns_the_version_already_there(model, blessed, examples, tmp_path):
    serving = tmp_path / "serving"
    first = push(model, blessed, examples, out_dir=tmp_path, serving_dir=serving)
    (serving / ".staging-999999999").mkdir()  # what a push killed before its rename leaves
    again = push(model, blessed, examples, out_dir=tmp_path, serving_dir=serving)
    assert again == first and sorted(p.name for p in serving.iterdir()) == ["1"]


def test_an_unreadable_serving_model_is_named_or_ignored_as_asked(model, blessed, examples, tmp_path):
    import shutil

    from components.versions import serving_baseline

    serving = tmp_path / "serving"
    (tmp_path / "out").mkdir()
    first = push(model, blessed, examples, out_dir=tmp_path / "out", serving_dir=serving)
    (Path(first.uri) / "saved_model.pb").write_bytes(b"\x08garbage")  # a disk error, a bad copy
    baseline = serving_baseline(serving, "another model")
    assert baseline.uri == first.uri  # the directory is read as it is: broken or not
    candidate = dataclasses.replace(model, fingerprint="another model")
    with pytest.raises(PipelineError, match=rf"^{first.uri}: the model serving now \(version 1\) cannot be read as "
                                            r"the regression baseline \(.+\); .*--baseline-broken ignore"):
        evaluate(candidate, examples, baseline, out_dir=tmp_path, min_accuracy=0.0)
    ignored = evaluate(candidate, examples, baseline, out_dir=tmp_path, min_accuracy=0.0, baseline_broken="ignore")
    assert ignored.blessed and ignored.baseline_version is None
    assert "baseline version 1" in ignored.reasons[1] and "ignored" in ignored.reasons[1]
    # The broken version does not block the next push: it goes beside it.
    second = push(candidate, ignored, examples, out_dir=tmp_path / "out", serving_dir=serving)
    assert second.version == 2 and serving_baseline(serving, "a third").version == 2
    shutil.rmtree(serving / "2")
    assert serving_baseline(serving, "a third").version == 1


def test_a_model_of_inverted_data_is_pushed_inverting_its_inputs(model, blessed, examples, tmp_path):
    """Ingest inverted the source (`Examples.inverted`): the export serves the source's images, inverting them."""
    pushed = push(model, blessed, dataclasses.replace(examples, inverted=True), out_dir=tmp_path,
                  serving_dir=tmp_path / "serving")
    info = json.loads((Path(pushed.uri) / "model_info.json").read_text())
    assert info["inverted"] is True and "same classes" in info["infra_check"]
    images = np.random.default_rng(2).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    expected = keras.models.load_model(model.path).predict(images.reshape(5, 784), verbose=0)
    served = tf.saved_model.load(pushed.uri).signatures["serving_default"](images=tf.constant(255 - images))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
    # As the regression baseline it is served the source's images too, and scores as the model does.
    again = evaluate(dataclasses.replace(model, fingerprint="retrained"), dataclasses.replace(examples, inverted=True),
                     pushed, out_dir=tmp_path, min_accuracy=0.0)
    assert again.baseline_accuracy == pytest.approx(again.accuracy)
    plain = json.loads((Path(push(model, blessed, examples, out_dir=tmp_path, serving_dir=tmp_path / "other").uri)
                        / "model_info.json").read_text())
    assert plain["inverted"] is False
