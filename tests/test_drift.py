"""Tests of drift measurement: summary features, shared-bucket histograms, distances and sampling noise."""
import numpy as np
import pytest

from components import drift, image_features
from components.libs import load_tfdv


def test_summary_features_of_known_images():
    images = np.zeros((2, 28, 28), np.uint8)
    images[1, 5:10, 3:20] = 200
    features = image_features.summarize(images)
    assert features["mean_intensity"][0] == 0 and features["center_row"][0] == 13.5
    assert features["bbox_height"][1] == 5 and features["bbox_width"][1] == 17
    assert features["center_row"][1] == pytest.approx(7) and features["center_col"][1] == pytest.approx(11)
    assert features["ink_fraction"][1] == pytest.approx(85 / 784)
    assert features["mean_intensity"][1] == pytest.approx(200 * 85 / 784, rel=1e-5)


def test_histograms_in_statistics_match_numpy(examples, stats):
    import tensorflow as tf

    tfdv = load_tfdv()
    train = tfdv.load_stats_binary(stats.path("train")).datasets[0]
    spec = {"mean_intensity": tf.io.FixedLenFeature([1], tf.float32), "label": tf.io.FixedLenFeature([1], tf.int64)}
    records = tf.data.TFRecordDataset(tf.io.gfile.glob(examples.file_pattern("train")), compression_type="GZIP")
    parsed = [tf.io.parse_single_example(r, spec) for r in records]
    means = np.array([float(p["mean_intensity"][0]) for p in parsed])
    edges = drift.boundaries()
    np.testing.assert_array_equal(drift.fixed_histogram(train, "mean_intensity"),
                                  np.histogram(means, bins=edges["mean_intensity"])[0])
    assert drift.fixed_histogram(train, "label").sum() == examples.counts["train"]
    assert drift.fixed_histogram(train, "absent") is None


def test_distances():
    p = np.array([10.0, 0, 0, 10])
    assert drift.jensen_shannon(p, p) == 0 and drift.l_infinity(p, p) == 0
    assert drift.jensen_shannon(np.array([1.0, 0]), np.array([0, 1.0])) == pytest.approx(1)
    assert drift.l_infinity(np.array([1.0, 1]), np.array([3.0, 1])) == pytest.approx(0.25)


def test_sampling_noise_absorbs_chance_but_not_shift():
    rng = np.random.default_rng(0)
    edges = np.linspace(0, 1, 29)
    baseline = np.histogram(rng.beta(2, 5, 50_000), bins=edges)[0].astype(float)
    small = np.histogram(rng.beta(2, 5, 100), bins=edges)[0].astype(float)
    shifted = np.histogram(np.clip(rng.beta(2, 5, 100) + 0.3, 0, 1), bins=edges)[0].astype(float)
    noise = drift.sampling_noise("jensen_shannon_divergence", baseline, small)
    assert drift.jensen_shannon(baseline, small) < 0.01 + noise  # chance alone: not drift
    assert drift.jensen_shannon(baseline, shifted) > 0.01 + noise
    big = np.histogram(rng.beta(2, 5, 50_000), bins=edges)[0].astype(float)
    assert drift.sampling_noise("jensen_shannon_divergence", baseline, big) < 0.001
