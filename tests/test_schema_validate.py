"""Tests of schema (curated or inferred with the MNIST-family contract) and validate (anomalies)."""
from pathlib import Path

import numpy as np
import pytest

from components.image_features import NAMES
from components.tfrecords import write_split
from components.libs import load_tfdv
from components.schema import curated_schema_path, load_schema, schema
from components.statistics import statistics
from components.validate import validate
from components.ingest import SPLITS, Examples
from engine.errors import DataError

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def _stats_of(tmp_path, images, labels):
    """Statistics of a dataset whose three splits all hold `images` and `labels`."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        write_split([(images, labels)], len(labels), tmp_path / "ex" / split)
    examples = Examples(uri=str(tmp_path / "ex"), fingerprint="x", spec="test", name="", source="test",
                        counts={s: len(labels) for s in SPLITS})
    (tmp_path / "stats").mkdir()
    return statistics(examples, out_dir=tmp_path / "stats")


def _anomalies(tmp_path, images, labels, curated=None):
    stats = _stats_of(tmp_path, images, labels)
    (tmp_path / "schema").mkdir()
    (tmp_path / "anomalies").mkdir()
    inferred = schema(stats, out_dir=tmp_path / "schema", curated=curated)
    return validate(stats, inferred, out_dir=tmp_path / "anomalies").anomalies


def _images(n, side=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, side, side), dtype=np.uint8)


def test_curated_schemas_ship_for_mnist_and_fashion_mnist():
    for name in ("mnist", "fashion_mnist"):
        proto = load_schema(curated_schema_path(SCHEMAS, name))
        label = next(f for f in proto.feature if f.name == "label")
        assert (label.int_domain.min, label.int_domain.max, label.int_domain.is_categorical) == (0, 9, True)
        assert list(label.not_in_environment) == ["SERVING"]
    assert curated_schema_path(SCHEMAS, "kmnist") == curated_schema_path(SCHEMAS, "") == SCHEMAS / "mnist_family.pbtxt"
    assert curated_schema_path(SCHEMAS / "absent", "mnist") is None  # then the schema is inferred


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "mnist_family"])
def test_curated_schemas_range_every_summary_feature_with_thresholds(name):
    features = {f.name: f for f in load_schema(SCHEMAS / f"{name}.pbtxt").feature}
    for feature in NAMES:
        f = features[feature]
        assert f.float_domain.max > f.float_domain.min and f.presence.min_fraction == 1
        assert f.drift_comparator.jensen_shannon_divergence.threshold > 0
        assert f.skew_comparator.jensen_shannon_divergence.threshold > 0
    assert features["label"].drift_comparator.infinity_norm.threshold > 0


def test_inferred_schema_gets_the_contract(stats, tmp_path):
    result = schema(stats, out_dir=tmp_path, curated=None)
    proto = load_tfdv().load_schema_text(result.path)
    features = {f.name: f for f in proto.feature}
    assert result.source == "inferred"
    assert (features["image"].int_domain.min, features["image"].int_domain.max) == (0, 255)
    assert [d.size for d in features["image"].shape.dim] == [784]
    assert features["label"].int_domain.max == 9 and not proto.string_domain
    assert features["label"].skew_comparator.infinity_norm.threshold > 0
    mean = features["mean_intensity"]
    assert 0 <= mean.float_domain.min < mean.float_domain.max <= 255 * 1.1
    assert mean.drift_comparator.jensen_shannon_divergence.threshold > 0


def test_curated_schema_is_copied(stats, tmp_path):
    result = schema(stats, out_dir=tmp_path, curated=SCHEMAS / "mnist.pbtxt")
    assert result.source.startswith("curated:") and result.source.endswith("mnist.pbtxt")


def test_malformed_curated_schema_names_file(stats, tmp_path):
    bad = tmp_path / "bad.pbtxt"
    bad.write_text("feature { name: 'label' typo: INT }")
    with pytest.raises(DataError, match=r"bad.pbtxt: not a valid TFDV schema"):
        schema(stats, out_dir=tmp_path, curated=bad)


def test_missing_schema_file():
    with pytest.raises(DataError, match=r"nope.pbtxt: schema file not found"):
        curated_schema_path(SCHEMAS, "mnist", "nope.pbtxt")


def test_clean_data_has_no_anomalies(tmp_path):
    """Learnable bars stretched to the full range, as every Fashion-MNIST image is (its brightest pixel 254 or
    255): clean under the curated schema; the same images with their brightest pixel below 248, dimmed, are an
    anomaly of `max_intensity` alone."""
    from conftest import make_images

    labels = np.arange(100) % 10
    images = make_images(labels, np.random.default_rng(0))
    images[np.arange(100), 2 + 2 * labels, 14] = 255
    curated = SCHEMAS / "fashion_mnist.pbtxt"
    assert _anomalies(tmp_path / "clean", images, labels, curated) == ()
    dimmed = np.minimum(images, 240)
    assert {(a.feature, a.type) for a in _anomalies(tmp_path / "dim", dimmed, labels, curated)} == {
        ("max_intensity", "FLOAT_TYPE_SMALL_FLOAT")}


def test_label_out_of_range_is_flagged(tmp_path):
    labels = np.arange(60) % 10  # six of each class: one taken leaves five, enough to learn from
    labels[7] = 12
    found = _anomalies(tmp_path, _images(60), labels)
    assert {(a.split, a.feature, a.type) for a in found} == {(s, "label", "INT_TYPE_BIG_INT") for s in SPLITS}
    assert "12" in found[0].description


def test_wrong_image_size_is_flagged(tmp_path):
    found = _anomalies(tmp_path, _images(50, side=32), np.arange(50) % 10, curated=SCHEMAS / "mnist.pbtxt")
    shape = [a for a in found if a.feature == "image"]
    assert {a.type for a in shape} == {"INVALID_FEATURE_SHAPE"} and "1024" in shape[0].description
    # 32-pixel boxes are out of range; uniform noise has a mid-gray border, which some images push past light.
    assert {a.feature for a in found} <= {"image", "bbox_height", "bbox_width", "background"}


def test_empty_split_is_flagged(tmp_path):
    found = _anomalies(tmp_path, _images(0), np.zeros(0, np.int64), curated=SCHEMAS / "mnist.pbtxt")
    assert [(a.split, a.type) for a in found] == [(s, "EMPTY_SPLIT") for s in SPLITS]


def test_drift_against_previous_span_names_the_feature(tmp_path):
    labels = np.arange(200) % 10
    images = np.random.default_rng(1).integers(0, 120, (200, 28, 28), dtype=np.uint8)
    before = _stats_of(tmp_path / "before", images, labels)
    after = _stats_of(tmp_path / "after", 255 - images, labels)
    (tmp_path / "schema").mkdir()
    (tmp_path / "out").mkdir()
    curated = schema(after, out_dir=tmp_path / "schema", curated=SCHEMAS / "mnist_family.pbtxt")
    result = validate(after, curated, before, out_dir=tmp_path / "out")
    drifted = {d.feature for d in result.distances if d.drifted}
    assert "mean_intensity" in drifted and "label" not in drifted
    drift = next(a for a in result.anomalies if a.feature == "mean_intensity")
    assert drift.type == "DRIFT" and "jensen_shannon_divergence" in drift.description
    skew = [d for d in result.distances if d.comparison.startswith("skew")]
    assert skew and not any(d.drifted for d in skew)  # each span's test equals its train here


def _stats_of_splits(tmp_path, splits):
    """Statistics of a dataset whose splits hold the given (images, labels)."""
    for split, (images, labels) in splits.items():
        write_split([(images, labels)], len(labels), tmp_path / "ex" / split)
    examples = Examples(uri=str(tmp_path / "ex"), fingerprint="x", spec="test", name="", source="test",
                        counts={s: len(labels) for s, (_, labels) in splits.items()})
    (tmp_path / "stats").mkdir()
    return statistics(examples, out_dir=tmp_path / "stats")


def _validated(tmp_path, current, previous=None):
    (tmp_path / "schema").mkdir()
    (tmp_path / "out").mkdir()
    curated = schema(current, out_dir=tmp_path / "schema", curated=SCHEMAS / "mnist_family.pbtxt")
    return validate(current, curated, previous, out_dir=tmp_path / "out")


def test_label_drift_fires_on_the_label_alone(tmp_path):
    images = np.random.default_rng(3).integers(0, 120, (600, 28, 28), dtype=np.uint8)
    labels = np.arange(600) % 10
    shifted = np.where(labels < 3, 3, labels)  # classes 0-2 relabelled 3: its share 0.1 -> 0.4
    before = _stats_of_splits(tmp_path / "before", {s: (images, labels) for s in SPLITS})
    after = _stats_of_splits(tmp_path / "after", {s: (images, shifted) for s in SPLITS})
    result = _validated(tmp_path, after, before)
    drifted = {(d.comparison.split(":")[0], d.feature, d.measure) for d in result.distances if d.drifted}
    assert drifted == {("drift", "label", "l_infinity")}
    anomaly = next(a for a in result.anomalies if a.type == "DRIFT")
    assert anomaly.feature == "label" and "l_infinity 0.3000 >= minimum effect 0.0300" in anomaly.description
    assert "z-test" in anomaly.description and "<= alpha" in anomaly.description  # of the interval null
    # The same data held to a false-positive rate no p-value here reaches: nothing drifts.
    for name in ("strict", "strict-schema"):
        (tmp_path / name).mkdir()
    curated = schema(after, out_dir=tmp_path / "strict-schema", curated=SCHEMAS / "mnist_family.pbtxt")
    strict = validate(after, curated, before, out_dir=tmp_path / "strict", false_positive_rate=1e-300)
    assert not any(d.drifted for d in strict.distances) and all(d.alpha <= 1e-300 for d in strict.distances)


def test_skew_fires_on_pixels_and_on_labels(tmp_path):
    rng = np.random.default_rng(4)
    images, labels = rng.integers(0, 120, (600, 28, 28), dtype=np.uint8), np.arange(600) % 10
    splits = {"train": (images, labels), "eval": (images[:100], labels[:100]),
              "test": (255 - images[:300], np.full(300, 7))}  # inverted, and one class only
    result = _validated(tmp_path, _stats_of_splits(tmp_path, splits))
    skewed = {(d.feature, d.measure) for d in result.distances if d.drifted and d.comparison.startswith("skew")}
    assert {("mean_intensity", "jensen_shannon_divergence"), ("label", "l_infinity")} <= skewed
    assert {(a.split, a.feature) for a in result.anomalies if a.type == "SKEW"} >= {("test", "label"),
                                                                                  ("test", "mean_intensity")}


def test_data_that_cannot_make_a_trustworthy_model_is_flagged(tmp_path):
    from components.validate import test_examples_needed

    # Every label one class: a model of it answers that class whatever it sees.
    found = _anomalies(tmp_path / "one", _images(40), np.full(40, 3), curated=SCHEMAS / "mnist.pbtxt")
    missing = [a for a in found if a.type == "MISSING_CLASSES"]
    assert [(a.split, a.feature) for a in missing] == [("train", "label"), ("test", "label")]
    assert missing[0].description.startswith("9 of the schema's 10 classes have no examples in split 'train': 0 (0)")
    # A test split of one image measures accuracy as 0 or 1: no threshold can be judged from it.
    stats = _stats_of(tmp_path / "small", _images(1), np.array([5]))
    for sub in ("schema", "a", "b"):
        (tmp_path / "small" / sub).mkdir()
    curated = schema(stats, out_dir=tmp_path / "small" / "schema", curated=SCHEMAS / "mnist.pbtxt")
    result = validate(stats, curated, out_dir=tmp_path / "small" / "a", min_accuracy=0.88)
    small = [a for a in result.anomalies if a.type == "TEST_SPLIT_TOO_SMALL"]
    assert small and small[0].description.startswith("1 examples; at least 30 are needed")
    assert [test_examples_needed(t) for t in (0.0, 0.5, 0.88, 0.97, 1.0)] == [1, 4, 30, 130, 1]
    assert validate(stats, curated, out_dir=tmp_path / "small" / "b", min_accuracy=0.0).anomalies == tuple(
        a for a in result.anomalies if a.type != "TEST_SPLIT_TOO_SMALL")


def test_one_class_or_a_class_too_small_to_learn_is_flagged_whatever_the_format(tmp_path):
    from components.validate import MIN_CLASS_EXAMPLES

    # A folder: dataset of one sub-folder names one class: the generic schema then has one, and its model
    # would be right by construction.
    one = _stats_of(tmp_path / "one", _images(40), np.zeros(40, np.int64))
    for sub in ("schema", "out"):
        (tmp_path / "one" / sub).mkdir()
    named = schema(one, out_dir=tmp_path / "one" / "schema", curated=SCHEMAS / "mnist_family.pbtxt",
                   classes=("shoe",))
    found = [a for a in validate(one, named, out_dir=tmp_path / "one" / "out").anomalies if a.feature == "label"]
    assert [(a.split, a.feature, a.type) for a in found] == [("train", "label", "TOO_FEW_CLASSES")]
    assert "1 class (shoe); a classifier needs at least 2" in found[0].description
    # Two classes, one of them with fewer training examples than a model can learn from.
    labels = np.array([0] * 30 + [1] * (MIN_CLASS_EXAMPLES - 1))
    scarce = _stats_of(tmp_path / "scarce", _images(len(labels)), labels)
    for sub in ("schema", "out"):
        (tmp_path / "scarce" / sub).mkdir()
    named = schema(scarce, out_dir=tmp_path / "scarce" / "schema", curated=SCHEMAS / "mnist_family.pbtxt",
                   classes=("shirt", "shoe"))
    found = validate(scarce, named, out_dir=tmp_path / "scarce" / "out").anomalies
    small = [a for a in found if a.type == "CLASS_TOO_SMALL"]
    assert [(a.split, a.feature) for a in small] == [("train", "label")]
    assert f"fewer than {MIN_CLASS_EXAMPLES} training examples to learn from: shoe (4)" in small[0].description


@pytest.mark.parametrize("curated", ["mnist_family", "fashion_mnist"])
def test_inverted_images_are_an_anomaly_naming_the_cause_and_the_fix(tmp_path, curated):
    from conftest import make_images

    labels = np.arange(50) % 10  # five of each class: enough to learn from
    images = make_images(labels, np.random.default_rng(0))
    assert _anomalies(tmp_path / "plain", images, labels, curated=SCHEMAS / f"{curated}.pbtxt") == ()
    found = _anomalies(tmp_path / "inverted", 255 - images, labels, curated=SCHEMAS / f"{curated}.pbtxt")
    polarity = [a for a in found if a.feature == "background"]
    assert [a.split for a in polarity] == list(SPLITS) and "BIG_FLOAT" in polarity[0].type
    assert "images look inverted (dark ink on a light background); set data.invert / --invert true" in \
        polarity[0].description


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="needs the dataset-fashion-mnist package of the README's install")
def test_the_curated_fashion_mnist_minimums_are_what_the_schema_command_measures(tmp_path):
    """schemas/fashion_mnist.pbtxt's comparator thresholds are the `schema` command's measurement, as its
    provenance comment says: every feature's minimum effect, drift and skew."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "pipeline", "schema", "--dataset", "fashion_mnist", "--root",
                           str(tmp_path / "root"), "--output", str(tmp_path / "draft.pbtxt")],
                          cwd=SCHEMAS.parent, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr

    def minimums(path: Path) -> dict[str, tuple[float, float]]:
        def threshold(comparator):
            return (comparator.infinity_norm.threshold if comparator.HasField("infinity_norm")
                    else comparator.jensen_shannon_divergence.threshold)

        return {f.name: (threshold(f.drift_comparator), threshold(f.skew_comparator))
                for f in load_schema(path).feature if f.HasField("drift_comparator")}

    measured, curated = minimums(tmp_path / "draft.pbtxt"), minimums(SCHEMAS / "fashion_mnist.pbtxt")
    assert measured == curated and len(curated) == len(NAMES) + 1  # every summary feature and the label
    def comment(path: Path) -> str:
        return " ".join(line[2:] for line in path.read_text().splitlines() if line.startswith("# "))

    assert comment(tmp_path / "draft.pbtxt").split(": ", 2)[-1] in comment(SCHEMAS / "fashion_mnist.pbtxt")
