"""Tests of polarity and inputs at serving time: the exported inversion, predict's warnings, inputs and classes."""
import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from components import formats
from components.push import INFO, export_serving
from conftest import make_images
from pipeline.config import Config
from engine.errors import DataError
from pipeline.serving import predict
from test_cli import assert_one_line_error, cli

DIGITS = tuple("0123456789")


@pytest.fixture(scope="module")
def exports(model, tmp_path_factory):
    """The tiny model exported twice: as trained on light ink on dark ("plain"), and on an inverted source."""
    root = tmp_path_factory.mktemp("exports")
    for name, invert in (("plain", False), ("inverted", True)):
        export_serving(model.path, root / name, DIGITS, invert)
        (root / name / INFO).write_text(json.dumps({"classes": list(DIGITS), "inverted": invert}))
    return root


def _write_pngs(directory, images):
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        paths.append(directory / f"{i:02d}.png")
        paths[-1].write_bytes(tf.io.encode_png(image[..., None]).numpy())
    return paths


def test_the_export_and_predict_invert_as_ingest_did(model, exports, tmp_path):
    images = make_images(np.arange(12) % 10, np.random.default_rng(7))
    expected = keras.models.load_model(model.path).predict(images.reshape(-1, 784), verbose=0)
    light = 255 - images  # what the model's source delivered: ingest inverted it for training
    signatures = tf.saved_model.load(str(exports / "inverted")).signatures
    served = signatures["serving_default"](images=tf.constant(light))["probabilities"].numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
    png = tf.constant([tf.io.encode_png(image[..., None]).numpy() for image in light])
    np.testing.assert_allclose(signatures["serving_png"](png=png)["probabilities"].numpy(), expected, atol=1e-5)

    files = _write_pngs(tmp_path / "light", light)
    result = predict(str(exports / "inverted"), None, [str(tmp_path / "light")], None, None, Config())
    assert [p["input"] for p in result["predictions"]] == [str(f) for f in files]
    assert [p["class_id"] for p in result["predictions"]] == expected.argmax(axis=1).tolist()
    np.testing.assert_allclose([p["probability"] for p in result["predictions"]], expected.max(axis=1), atol=1e-5)
    assert "warnings" not in result and not any("warnings" in p for p in result["predictions"])
    # The same light images for a model trained on dark backgrounds: each is flagged.
    flagged = predict(str(exports / "plain"), None, [str(f) for f in files], None, None, Config())
    assert all("polarity: a light background" in p["warnings"][0] for p in flagged["predictions"])
    assert flagged["warnings"] == [f"12 of 12 inputs: polarity: a light background, unlike the model's training "
                                   f"data (dark): invert the image ({', '.join(map(str, files[:10]))} and 2 more); "
                                   "their predictions may be wrong"]


def test_predict_reads_what_folder_reads_and_warns_on_polarity_and_size(exports, tmp_path):
    images = make_images(np.arange(4), np.random.default_rng(8))
    files = _write_pngs(tmp_path / "in", images[:2])
    (tmp_path / "in" / "light.png").write_bytes(tf.io.encode_png(255 - images[2][..., None]).numpy())
    big = tf.image.resize(np.repeat(images[3][..., None], 4, axis=-1), [40, 40], method="nearest")
    (tmp_path / "in" / "rgba.png").write_bytes(tf.io.encode_png(tf.cast(big, tf.uint8)).numpy())
    (tmp_path / "in" / "photo.jpg").write_bytes(tf.io.encode_jpeg(images[0][..., None]).numpy())
    code, out, err = cli("predict", "--model", exports / "plain", tmp_path / "in", "--json")
    assert code == 0, err
    rows = {row["input"].rsplit("/", 1)[1]: row for row in json.loads(out)["predictions"]}
    assert set(rows) == {"00.png", "01.png", "light.png", "rgba.png", "photo.jpg"}
    assert rows["light.png"]["warnings"] == ["polarity: a light background, unlike the model's training data (dark): "
                                             "invert the image"]
    assert rows["rgba.png"]["warnings"] == ["size: not 28x28 as the training data, resized"]
    assert "warnings" not in rows["00.png"] and "warnings" not in rows["photo.jpg"]
    warned = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert warned == [f"warning: {w}" for w in json.loads(out)["warnings"]] and len(warned) == 2
    assert "light.png" in warned[0] and "rgba.png" in warned[1]
    code, out, err = cli("predict", "--model", exports / "plain", *files)
    assert code == 0 and len(out.splitlines()) == 2 and "warning" not in err, err


def test_predict_answers_a_large_colour_jpeg_as_folder_reads_it_naming_classes(model, exports, tmp_path):
    """A 64x64 colour JPEG is predicted as `--dataset folder:` reads it (grayscale, resized by formats.read_images),
    a directory's files that are no images are counted in one warning line, and the text names the classes."""
    words = ("top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
    export_serving(model.path, tmp_path / "named", words, False)
    (tmp_path / "named" / INFO).write_text(json.dumps({"classes": list(words), "inverted": False}))
    images = make_images(np.arange(2), np.random.default_rng(10))
    (tmp_path / "in").mkdir()
    for i, image in enumerate(images):
        big = tf.image.resize(np.repeat(image[..., None], 3, axis=-1), [64, 64], method="nearest")
        (tmp_path / "in" / f"{i}.jpg").write_bytes(tf.io.encode_jpeg(tf.cast(big, tf.uint8)).numpy())
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    (tmp_path / "in" / "labels.csv").write_text("0\n")
    code, out, err = cli("predict", "--model", tmp_path / "named", tmp_path / "in")
    assert code == 0, err
    skipped = [line for line in err.splitlines() if "skipped" in line]
    assert skipped == [f"warning: 2 files skipped, not PNG or JPEG images ({tmp_path / 'in' / 'labels.csv'} "
                       "and 1 more)"], err
    expected = formats.read_images(sorted((tmp_path / "in").glob("*.jpg")))[0]
    served = tf.saved_model.load(str(tmp_path / "named")).signatures["serving_default"](images=tf.constant(expected))
    assert out.splitlines() == [f"{tmp_path / 'in' / f'{i}.jpg'}: class {c} {words[c]} ({p[c]:.4f})" for i, (c, p)
                                in enumerate(zip(served["class_ids"].numpy(), served["probabilities"].numpy()))]
    code, same, err = cli("predict", "--model", tmp_path / "named", "--dataset", f"folder:{tmp_path / 'in'}",
                          "--root", tmp_path / "root")
    assert code == 0 and same == out and "2 files skipped" in err, err
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30))
    code, out, err = cli("predict", "--model", tmp_path / "named", tmp_path / "in" / "0.jpg", tmp_path / "bad.png")
    assert code == 1 and out == "" and "0.jpg" not in err, err
    assert_one_line_error(err, f"{tmp_path / 'bad.png'}: not a readable PNG or JPEG image")


def test_one_bad_file_among_several_is_named_alone(exports, tmp_path):
    good = _write_pngs(tmp_path, make_images(np.arange(2), np.random.default_rng(9)))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30))
    with pytest.raises(DataError, match=rf"^{re.escape(str(bad))}: not a readable PNG or JPEG image [^,]*$"):
        predict(str(exports / "plain"), None, [str(good[0]), str(bad), str(good[1])], None, None, Config())


def _class_folders(directory, names):
    for k, name in enumerate(names):
        _write_pngs(directory / name, make_images(np.full(2, int(name) if name.isdigit() else k),
                                                  np.random.default_rng(k)))
    return directory


def test_dataset_classes_are_mapped_by_name_or_refused_listing_both(exports, tmp_path):
    # Folder classes are numbered alphabetically ("3" is 0 here): predict maps them to the model's by name.
    result = predict(str(exports / "plain"), None, [], f"folder:{_class_folders(tmp_path / 'digits', ['7', '3'])}",
                     None, Config(root=str(tmp_path / "root")))
    assert [(p["input"].split("/")[-2], p["label"]) for p in result["predictions"]] == [("3", 3)] * 2 + [("7", 7)] * 2
    with pytest.raises(DataError, match=r"pets: the data's classes \(cat, dog\) differ from the model's "
                                        r"\(0, 1, 2, 3, 4, 5, 6, 7, 8, 9\)"):
        predict(str(exports / "plain"), None, [], f"folder:{_class_folders(tmp_path / 'pets', ['cat', 'dog'])}",
                None, Config(root=str(tmp_path / "root")))
    code, out, err = cli("predict", "--model", exports / "plain", "--dataset",
                         f"folder:{_class_folders(tmp_path / 'more', ['10', '2'])}", "--root", tmp_path / "root")
    assert code == 1 and out == ""
    assert_one_line_error(err, "the data's classes (10, 2) differ from the model's (0, 1, 2")


def test_predict_dataset_refuses_images_beside_class_folders(exports, tmp_path):
    folder = _class_folders(tmp_path / "mixed", ["1", "2"])
    (folder / "loose.png").write_bytes(b"not even an image")
    with pytest.raises(DataError, match=r"mixed: 1 images beside the class sub-folders \(loose.png\)"):
        predict(str(exports / "plain"), None, [], f"folder:{folder}", None, Config(root=str(tmp_path / "root")))
    # A directory argument is its images; class folders are a dataset, never silently skipped.
    with pytest.raises(DataError, match=r"mixed: a directory with sub-folders; .* pass --dataset folder:"):
        predict(str(exports / "plain"), None, [str(folder)], None, None, Config(root=str(tmp_path / "root")))


def test_a_named_dataset_read_from_idx_files_has_its_curated_class_names():
    """`fashion_mnist` is read from IDX files, whose labels are numbers: its classes are its curated schema's,
    so predict and drift compare them with a model's or another dataset's names."""
    from pathlib import Path

    from components.schema import dataset_classes
    from components.ingest import Examples

    schemas = Path(__file__).resolve().parent.parent / "schemas"
    fashion = Examples(uri="", fingerprint="", spec="fashion_mnist", name="fashion_mnist", source="idx",
                       counts={}, classes=(), labelled=True)
    assert dataset_classes(fashion, schemas)[:2] == ("T-shirt/top", "Trouser")
    assert dataset_classes(Examples(uri="", fingerprint="", spec="idx:/d", name="", source="idx", counts={},
                                    classes=(), labelled=True), schemas) == ()  # numbered: names no class


def test_the_drift_model_view_inverts_as_the_signatures_do(model, exports, examples):
    from components.inputs import split_arrays
    from components.model_drift import load_model, outputs
    from pipeline.checks import model_view_images
    from pipeline.serving import model_info

    images = split_arrays(examples.file_pattern("test"), 8)[0].reshape(-1, 28, 28)
    expected = keras.models.load_model(model.path).predict(images.reshape(-1, 784), verbose=0)
    version = exports / "inverted"
    seen = model_view_images(255 - images, model_info(version)["inverted"])  # the source's images, as delivered
    np.testing.assert_allclose(outputs(load_model(version), seen)[0], expected, atol=1e-5)
    assert (model_view_images(images, model_info(exports / "plain")["inverted"]) == images).all()
