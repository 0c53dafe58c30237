"""Tests of schema (curated or inferred with the MNIST-family contract) and validate (anomalies)."""
from pathlib import Path

import numpy as np
import pytest

from components.ingest import write_split
from components.schema import curated_schema_path, load_schema, schema
from components.statistics import statistics
from components.validate import validate
from pipeline.artifacts import SPLITS, Examples
from pipeline.errors import DataError
from pipeline.libs import load_tfdv

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def _stats_of(tmp_path, images, labels):
    """Statistics of a dataset whose three splits all hold `images` and `labels`."""
    for split in SPLITS:
        write_split(images, labels, tmp_path / "ex" / split)
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
    assert curated_schema_path(SCHEMAS, "") is None and curated_schema_path(SCHEMAS, "kmnist") is None


def test_inferred_schema_gets_the_contract(stats, tmp_path):
    result = schema(stats, out_dir=tmp_path, curated=None)
    proto = load_tfdv().load_schema_text(result.path)
    features = {f.name: f for f in proto.feature}
    assert result.source == "inferred"
    assert (features["image"].int_domain.min, features["image"].int_domain.max) == (0, 255)
    assert [d.size for d in features["image"].shape.dim] == [784]
    assert features["label"].int_domain.max == 9 and not proto.string_domain


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


def test_clean_data_has_no_anomalies(stats, tmp_path):
    curated = schema(stats, out_dir=tmp_path, curated=SCHEMAS / "fashion_mnist.pbtxt")
    (tmp_path / "a").mkdir()
    assert validate(stats, curated, out_dir=tmp_path / "a").anomalies == ()


def test_label_out_of_range_is_flagged(tmp_path):
    labels = np.arange(40) % 10
    labels[7] = 12
    found = _anomalies(tmp_path, _images(40), labels)
    assert {(a.split, a.feature, a.type) for a in found} == {(s, "label", "INT_TYPE_BIG_INT") for s in SPLITS}
    assert "12" in found[0].description


def test_wrong_image_size_is_flagged(tmp_path):
    found = _anomalies(tmp_path, _images(30, side=32), np.arange(30) % 10, curated=SCHEMAS / "mnist.pbtxt")
    assert {(a.feature, a.type) for a in found} == {("image", "INVALID_FEATURE_SHAPE")}
    assert "1024" in found[0].description


def test_empty_split_is_flagged(tmp_path):
    found = _anomalies(tmp_path, _images(0), np.zeros(0, np.int64), curated=SCHEMAS / "mnist.pbtxt")
    assert [(a.split, a.type) for a in found] == [(s, "EMPTY_SPLIT") for s in SPLITS]
