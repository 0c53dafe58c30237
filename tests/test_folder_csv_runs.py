"""End to end through the CLI on the datasets people have: PNG folders per class, flat folders, Kaggle CSV."""
import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import make_images, write_dataset
from test_cli import assert_one_line_error, cli
from test_formats import write_csv, write_png_folder

CLASSES = [f"kind-{c}" for c in "abcdefghijkl"]  # 12 classes: a head wider than the MNIST family's ten
QUICK = ["--no-tune", "--epochs", "2", "--min-accuracy", "0", "--json"]


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A run on 12 class folders, some images RGB and some 32x32; returns (root, summary)."""
    root = tmp_path_factory.mktemp("folders")
    write_png_folder(root / "data", CLASSES, 24, colour_every=4, large_every=7)
    code, out, err = cli("run", "--dataset", f"folder:{root / 'data'}", "--root", root / "root", *QUICK)
    assert code == 0, err
    return root, json.loads(out)


def test_a_folder_of_twelve_classes_pushes_a_model_that_names_them(folder_run):
    root, summary = folder_run
    assert summary["status"] == "pushed"
    assert summary["dataset"]["classes"] == CLASSES and "colour" in summary["dataset"]["preprocessing"]
    assert summary["schema"]["classes"] == CLASSES and "12 classes from the data" in summary["schema"]["source"]
    assert [r["name"] for r in summary["evaluation"]["per_class"]] == CLASSES
    serve = tf.saved_model.load(summary["pushed_model"]).signatures["serving_default"]
    images = make_images(np.arange(12), np.random.default_rng(5))
    out = serve(images=tf.constant(images))
    assert out["probabilities"].shape == (12, 12)
    names = [n.decode() for n in out["classes"].numpy()]
    assert names == [CLASSES[i] for i in out["class_ids"].numpy()]
    report = (root / "root" / "runs" / summary["run_id"] / "report.html").read_text()
    assert "kind-l" in report and "0: kind-a" in report


def test_unlabeled_images_are_predicted_and_checked_for_drift(folder_run, tmp_path):
    root, summary = folder_run
    flat = tmp_path / "flat"
    flat.mkdir()
    rng = np.random.default_rng(3)
    for i, image in enumerate(make_images(np.arange(60) % 12, rng)):
        (flat / f"{i:03d}.png").write_bytes(tf.io.encode_png(image[..., None]).numpy())
    code, out, err = cli("predict", "--serving-dir", root / "root" / "serving", "--dataset", f"folder:{flat}",
                         "--root", root / "root", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["count"] == 60 and "accuracy" not in result
    assert result["predictions"][0]["input"] == str(flat / "000.png")
    assert {p["class"] for p in result["predictions"]} <= set(CLASSES)

    code, out, err = cli("drift", "--baseline", f"folder:{root / 'data'}", "--current", f"folder:{flat}",
                         "--root", root / "root", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert "current data have no labels" in report["label"] and not report["anomalies"]
    assert "label" not in {d["feature"] for d in report["distances"]}
    for path in flat.iterdir():  # the same images inverted have drifted
        image = tf.io.decode_png(path.read_bytes()).numpy()
        path.write_bytes(tf.io.encode_png(255 - image).numpy())
    code, out, err = cli("drift", "--baseline", f"folder:{root / 'data'}", "--current", f"folder:{flat}",
                         "--root", root / "root", "--json")
    assert code == 3 and json.loads(out)["drifted"], err


@pytest.mark.slow
def test_numbered_labels_beyond_the_schema_block_until_a_drafted_schema_names_them(tmp_path):
    labels = np.arange(240) % 12
    write_csv(tmp_path / "d.csv", labels, make_images(labels, np.random.default_rng(6)))
    spec = f"csv:{tmp_path / 'd.csv'}"
    code, out, err = cli("run", "--dataset", spec, "--root", tmp_path / "root", *QUICK)
    assert code == 3, err  # labels 10 and 11 are outside the generic schema's ten classes
    assert any(a["feature"] == "label" for a in json.loads(out)["anomalies"])
    code, out, err = cli("schema", "--dataset", spec, "--root", tmp_path / "root", "--output", tmp_path / "s.pbtxt")
    assert code == 0, err
    code, out, err = cli("run", "--dataset", spec, "--root", tmp_path / "root", "--schema", tmp_path / "s.pbtxt",
                         *QUICK)
    assert code == 0, err
    summary = json.loads(out)  # a CSV in Kaggle's layout, run end to end
    assert summary["status"] == "pushed" and sum(summary["dataset"]["counts"].values()) == 240
    assert summary["schema"]["classes"] == [str(i) for i in range(12)]
    assert len(summary["evaluation"]["confusion_matrix"]) == 12


def test_a_corrupt_png_is_one_line_naming_it(tmp_path):
    write_png_folder(tmp_path / "data", ["a", "b"], 3)
    (tmp_path / "data" / "b" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code, out, err = cli("run", "--dataset", f"folder:{tmp_path / 'data'}", "--root", tmp_path / "root", *QUICK)
    assert code == 1, err
    assert_one_line_error(err, str(tmp_path / "data" / "b" / "bad.png"), "not a readable PNG or JPEG image")


def unlabeled_specs(directory):
    """The three kinds of images without labels: a flat folder, CSV files without a label column (one, or a
    directory's pair), and an IDX images file without its labels file; as {spec: what training needs}. Most
    hold a broken image, so a refusal that read the images would name it instead."""
    images = make_images(np.arange(40) % 10, np.random.default_rng(4))
    (directory / "flat").mkdir()
    for i, image in enumerate(images):
        (directory / "flat" / f"{i}.png").write_bytes(tf.io.encode_png(image[..., None]).numpy())
    (directory / "flat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with write_csv(directory / "test.csv", None, images).open("a") as f:
        f.write("1,2,3\n")  # a cut-off row
    (directory / "csv").mkdir()
    for name in ("train.csv", "test.csv"):  # Kaggle's pair, both without labels
        write_csv(directory / "csv" / name, None, images)
    idx_images = write_dataset(directory / "idx", {"t10k": 40}) / "t10k-images-idx3-ubyte.gz"
    (directory / "idx" / "t10k-labels-idx1-ubyte.gz").unlink()
    idx_images.write_bytes(idx_images.read_bytes()[:100])  # truncated
    return {f"folder:{directory / 'flat'}": "one sub-folder per class (DIR/<class>/<image>.png)",
            f"csv:{directory / 'test.csv'}": "a 'label' column", f"csv:{directory / 'csv'}": "a 'label' column",
            f"idx:{directory / 'idx'}": "the labels file (t10k-labels-idx1-ubyte.gz)"}


def test_a_run_on_images_without_labels_is_refused_as_usage_before_any_record(tmp_path):
    """A flat folder, a CSV without a label column, an IDX images file without its labels file: a run, even
    `--to statistics`, cannot use them. Exit 2 with one line saying what training needs and what such data
    is for, before a run is recorded or an image read; the API raises its usage error the same way."""
    from engine.errors import ConfigError
    from engine.metadata import Metadata
    from pipeline import api
    from pipeline.flags import run_config

    root = tmp_path / "root"
    Metadata.open(run_config(None, root, None))  # an empty store: `runs list` shows whether a run was recorded
    for spec, needs in unlabeled_specs(tmp_path).items():
        for stop in ([], ["--to", "statistics"]):
            code, out, err = cli("run", "--dataset", spec, "--root", root, *QUICK, *stop)
            assert code == 2 and out == "", err
            assert_one_line_error(err, f"error: dataset spec '{spec}': images without labels (",
                                  f"training needs labels, {needs}; images without labels are for `drift "
                                  f"--current {spec}` and `predict`")
        with pytest.raises(ConfigError, match="training needs labels"):
            api.run(spec, root=root, no_tune=True)
    code, out, err = cli("runs", "list", "--root", root, "--json")
    assert code == 0 and json.loads(out) == [], err
    assert not (root / "runs").exists() and not (root / "artifacts").exists()


def test_a_csv_without_a_header_says_so(tmp_path):
    labels = np.arange(8) % 2
    path = write_csv(tmp_path / "train.csv", labels, make_images(labels, np.random.default_rng(5)))
    path.write_text("".join(path.read_text().splitlines(keepends=True)[1:]))
    code, out, err = cli("run", "--dataset", f"csv:{path}", "--root", tmp_path / "root", *QUICK)
    assert code == 1, err
    assert_one_line_error(err, f"{path}: the first line is data (785 numbers), not a header: add the header line "
                          "'label,pixel0,...,pixel783'")


@pytest.mark.parametrize("kind", ["folder", "csv"])
def test_data_of_one_class_is_blocked_in_any_format(tmp_path, kind):
    """One sub-folder, or a CSV whose labels are all one class: a model of it is right by construction."""
    if kind == "folder":
        spec, expected = f"folder:{write_png_folder(tmp_path / 'data', ['shoe'], 40)}", "TOO_FEW_CLASSES"
    else:
        labels = np.full(60, 7)
        spec = f"csv:{write_csv(tmp_path / 'train.csv', labels, make_images(labels, np.random.default_rng(1)))}"
        expected = "MISSING_CLASSES"
    code, out, err = cli("run", "--dataset", spec, "--root", tmp_path / "root", *QUICK)
    summary = json.loads(out)
    assert code == 3 and summary["status"] == "blocked" and summary["pushed_model"] is None, err
    assert ("train", "label", expected) in {(a["split"], a["feature"], a["type"]) for a in summary["anomalies"]}
    assert "train" not in summary["components"]
    assert_one_line_error(err, "data validation failed")


def test_drift_between_datasets_whose_classes_differ_is_refused_naming_both(tmp_path):
    """Label i of a folder of digits named zero..nine is not class i of a folder of clothes: no label
    comparison means anything, so the check stops (exit 3) and lists both vocabularies. Labels known
    only by number (IDX, CSV) name no class and compare as before."""
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    digits = write_png_folder(tmp_path / "digits", words, 3)
    clothes = write_png_folder(tmp_path / "clothes", ["bag", "coat", "dress", "pullover", "sandal", "shirt",
                                                      "sneaker", "trouser", "t-shirt", "zip"], 3, seed=1)
    code, out, err = cli("drift", "--baseline", f"folder:{clothes}", "--current", f"folder:{digits}",
                         "--root", tmp_path / "root", "--json")
    report = json.loads(out)
    assert code == 3 and report["drifted"] and "Traceback" not in err, err
    named = [a for a in report["anomalies"] if a["type"] == "CLASS_NAMES"]
    assert named and named[0]["description"].startswith(
        f"folder:{digits}'s labels stand for other classes than folder:{clothes}'s: eight, five, four, nine, one, "
        "seven, six, three, two, zero vs bag, coat, dress")
    assert "label" not in {d["feature"] for d in report["distances"]} and report["distances"]  # pixels still compare
    assert "CLASS_NAMES" in report["label"]
    numbered = write_dataset(tmp_path / "idx", {"train": 60, "t10k": 20})
    for baseline in (f"folder:{digits}", f"idx:{numbered}:train"):
        code, out, err = cli("drift", "--baseline", baseline, "--current", f"folder:{digits}", "--root",
                             tmp_path / "root", "--json")
        assert code in (0, 3) and "CLASS_NAMES" not in err and json.loads(out)["distances"], err
