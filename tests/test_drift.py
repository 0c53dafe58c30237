"""Tests of drift detection: summary features, shared-bucket histograms, effect sizes and the G-test."""
from pathlib import Path

import numpy as np
import pytest

from components import drift, image_features
from components.libs import load_tfdv
from components.drift import Distance


def test_summary_features_of_known_images():
    images = np.zeros((2, 28, 28), np.uint8)
    images[1, 5:10, 3:20] = 200
    features = image_features.summarize(images)
    assert features["mean_intensity"][0] == 0 and features["center_row"][0] == 13.5
    assert features["bbox_height"][1] == 5 and features["bbox_width"][1] == 17
    assert features["center_row"][1] == pytest.approx(7) and features["center_col"][1] == pytest.approx(11)
    assert features["ink_fraction"][1] == pytest.approx(85 / 784)
    assert features["bbox_center_row"][1] == 7 and features["bbox_center_col"][1] == 11
    assert features["bbox_center_row"][0] == features["bbox_center_col"][0] == 13.5
    assert features["mean_intensity"][1] == pytest.approx(200 * 85 / 784, rel=1e-5)


def test_the_features_that_see_dimming_resampling_off_centre_boxes_and_mirroring():
    """max_intensity falls with a dimmer exposure and with a rotation's blur; bbox_offset is the box centre's
    distance from the image's; mass_offset_col, the lean of the mass in its box, changes sign when mirrored."""
    from scipy import ndimage

    boot = np.zeros((1, 28, 28), np.uint8)
    boot[0, 18:22, 4:24] = 255  # a sole, toe to the left
    boot[0, 6:18, 18:24] = 255  # a shaft on the right
    features = image_features.summarize(np.concatenate([boot, boot // 2, boot[:, :, ::-1]]))
    assert features["max_intensity"].tolist() == [255, 127, 255]
    stroke = np.zeros((28, 28), np.float32)
    stroke[4:24, 14] = 255  # one pixel wide: a rotation spreads it over two
    rotated = ndimage.rotate(stroke, 15, reshape=False, order=1).round().astype(np.uint8)
    assert image_features.summarize(rotated[None])["max_intensity"][0] < 255
    # the box spans rows 6-21 and columns 4-23: its centre (13.5, 13.5) is the image's
    assert features["bbox_offset"][0] == 0
    assert features["mass_offset_col"][0] > 1 and features["mass_offset_col"][2] == pytest.approx(
        -features["mass_offset_col"][0])
    moved = np.zeros((1, 28, 28), np.uint8)
    moved[0, 5:10, 3:20] = 200  # box centre (7, 11)
    assert image_features.summarize(moved)["bbox_offset"][0] == pytest.approx(np.hypot(6.5, 2.5))
    assert len(drift.boundaries()["mass_offset_col"]) == image_features.buckets("mass_offset_col") + 1 == 9


def test_histograms_in_statistics_match_numpy(examples, stats):
    import tensorflow as tf

    tfdv = load_tfdv()
    train = tfdv.load_stats_binary(stats.path("train")).datasets[0]
    spec = {name: tf.io.FixedLenFeature([1], tf.float32) for name in ("mean_intensity", "mass_offset_col")}
    records = tf.data.TFRecordDataset(tf.io.gfile.glob(examples.file_pattern("train")), compression_type="GZIP")
    parsed = [tf.io.parse_single_example(r, {**spec, "label": tf.io.FixedLenFeature([1], tf.int64)}) for r in records]
    edges = drift.boundaries()
    for name in spec:  # 28 buckets, and 8 for mass_offset_col, clipped to the range as `histograms` clips
        values = np.clip([float(p[name][0]) for p in parsed], edges[name][0], edges[name][-1])
        np.testing.assert_array_equal(drift.fixed_histogram(train, name), np.histogram(values, bins=edges[name])[0])
    assert drift.fixed_histogram(train, "label").sum() == examples.counts["train"]
    assert drift.fixed_histogram(train, "absent") is None


def test_distances():
    p = np.array([10.0, 0, 0, 10])
    assert drift.jensen_shannon(p, p) == 0 and drift.l_infinity(p, p) == 0
    assert drift.jensen_shannon(np.array([1.0, 0]), np.array([0, 1.0])) == pytest.approx(1)
    assert drift.l_infinity(np.array([1.0, 1]), np.array([3.0, 1])) == pytest.approx(0.25)


def _beta_counts(rng, n, shift=0.0):
    return np.histogram(np.clip(rng.beta(2, 5, n) + shift, 0, 1), bins=np.linspace(0, 1, 29))[0].astype(float)


def test_g_test_false_alarms_stay_at_the_rate_and_shifts_are_found():
    rng = np.random.default_rng(0)
    baseline = _beta_counts(rng, 50_000)
    clean = [drift.g_test(baseline, _beta_counts(rng, 100))[2] for _ in range(400)]
    assert np.mean(np.array(clean) < 0.05) <= 0.07  # chance alone alarms about as often as the level says
    assert np.mean(np.array(clean) < 0.5) == pytest.approx(0.5, abs=0.1)
    assert drift.g_test(baseline, _beta_counts(rng, 100, shift=0.3))[2] < 1e-10


def test_sparse_buckets_are_pooled_with_each_other_not_with_the_bulk():
    a, b = drift.merged(np.array([0.0, 320, 0]), np.array([20.0, 60, 0]))  # a quarter of the batch blank
    assert a.tolist() == [320, 0] and b.tolist() == [60, 20]
    assert drift.g_test(np.array([0.0, 320, 0]), np.array([20.0, 60, 0]))[2] < 1e-10
    # A rare cell expecting under one image joins the smallest other cell.
    a, b = drift.merged(np.array([1.0, 2, 400, 300, 2, 1, 0]), np.array([0.0, 1, 50, 40, 1, 0, 0]))
    assert a.tolist() == [400, 306] and b.tolist() == [50, 42]
    assert drift.g_test(np.array([5.0, 0]), np.array([3.0, 0])) == (0.0, 0, 1.0)  # one cell: no test


def _distance(p_value, effect, threshold=0.001):
    return Distance("drift: a vs b", f"f{p_value}", "jensen_shannon_divergence", effect, threshold, "G-test", 1.0, 1,
                    p_value, 0.0, False)


def test_holm_shares_the_rate_among_the_tests_of_a_check():
    decided = drift.decide([_distance(0.5, 1), _distance(1e-5, 1), _distance(0.0004, 1)], 0.001)
    assert [d.alpha for d in decided] == pytest.approx([0.001, 0.001 / 3, 0.0005])
    assert [d.drifted for d in decided] == [False, True, True]
    # Holm stops at the first test that passes: a later, larger p-value is not drift even under its own level.
    decided = drift.decide([_distance(0.0004, 1), _distance(0.0006, 1), _distance(0.00099, 1)], 0.001)
    assert [d.drifted for d in decided] == [False, False, False]


def test_a_huge_batch_does_not_alarm_on_a_trivial_difference():
    rng = np.random.default_rng(1)
    baseline, today = _beta_counts(rng, 2_000_000), _beta_counts(rng, 2_000_000, shift=0.001)
    assert drift.g_test(baseline, today)[2] < 1e-6  # a real difference, the G-test of equality says
    found = drift.bucket_test("drift: a vs b", "f", "jensen_shannon_divergence", baseline, today, 0.0005)
    assert found.distance < 0.0005 and found.p_value > 0.5  # but far below the minimum effect
    assert not drift.decide([found], 0.001)[0].drifted
    found = drift.bucket_test("drift: a vs b", "f", "jensen_shannon_divergence", baseline, today, 0.000002)
    assert drift.decide([found], 0.001)[0].drifted


def _mixture_at(base: np.ndarray, other: np.ndarray, jsd: float) -> np.ndarray:
    """Shares between `base` and `other` whose JSD from `base` is `jsd`."""
    from scipy.optimize import brentq

    share = brentq(lambda t: drift.jensen_shannon(base, (1 - t) * base + t * other) - jsd, 1e-9, 1)
    return (1 - share) * base + share * other


def test_the_interval_null_holds_its_level_at_the_minimum_effect_and_ignores_noise_below_it():
    """A batch whose true effect is the schema's minimum alarms at most at the level; one with a real but
    smaller difference, whose estimate sampling noise lifts above the minimum (2,000 images against
    60,000), does not alarm; one well above it does."""
    rng = np.random.default_rng(2)
    base = _beta_counts(rng, 2_000_000) / 2_000_000
    other = _beta_counts(rng, 2_000_000, shift=0.1) / 2_000_000
    minimum = 0.0005

    def p_values(shares, n, tries):
        return np.array([drift.interval_test("jensen_shannon_divergence", rng.multinomial(60_000, base) * 1.0,
                                             rng.multinomial(n, shares) * 1.0, minimum)[3] for _ in range(tries)])

    assert np.mean(p_values(_mixture_at(base, other, minimum), 2000, 400) < 0.05) <= 0.08
    below = _mixture_at(base, other, minimum / 2)
    estimates = [drift.jensen_shannon(rng.multinomial(60_000, base) * 1.0, rng.multinomial(2000, below) * 1.0)
                 for _ in range(20)]
    assert min(estimates) > minimum  # the point estimate alone would call every batch drift
    assert (p_values(below, 2000, 200) > 0.001).all()
    assert (p_values(_mixture_at(base, other, 20 * minimum), 2000, 20) < 1e-5).all()  # below any Holm level
    # L-infinity: a class's share moved by twice the minimum is found in 10,000 labels; half of it is not.
    classes = np.full(10, 0.1)
    moved = lambda by: classes + np.r_[by, [-by / 9] * 9]  # noqa: E731
    test = lambda by: drift.interval_test("l_infinity", rng.multinomial(60_000, classes) * 1.0,  # noqa: E731
                                          rng.multinomial(10_000, moved(by)) * 1.0, 0.03)
    assert test(0.06)[:1] == ("z-test",) and test(0.06)[3] < 1e-6 and test(0.015)[3] == 1.0


def test_ok_means_shown_within_the_minimum_and_the_size_needed_decides():
    """The mirrored test claims "within the minimum" for at most WITHIN_LEVEL of batches whose effect is
    the minimum; a clean batch of the size `size_to_decide` names is shown ok about nine times in ten, and a
    much smaller one is too small to decide."""
    rng = np.random.default_rng(4)
    base = _beta_counts(rng, 2_000_000) / 2_000_000
    other = _beta_counts(rng, 2_000_000, shift=0.1) / 2_000_000
    minimum, baseline = 0.0005, rng.multinomial(60_000, base) * 1.0
    at_minimum = _mixture_at(base, other, minimum)
    claims = [drift.within_test("jensen_shannon_divergence", baseline, rng.multinomial(20_000, at_minimum) * 1.0,
                                minimum) <= drift.WITHIN_LEVEL for _ in range(300)]
    assert np.mean(claims) <= 0.08
    needed = drift.size_to_decide("jensen_shannon_divergence", baseline, rng.multinomial(2000, base) * 1.0, minimum)
    ok = [drift.within_test("jensen_shannon_divergence", baseline, rng.multinomial(needed, base) * 1.0, minimum)
          <= drift.WITHIN_LEVEL for _ in range(200)]
    assert 0.8 <= np.mean(ok)
    small = drift.bucket_test("drift: a vs b", "f", "jensen_shannon_divergence", baseline,
                              rng.multinomial(needed // 10, base) * 1.0, minimum)
    decided = drift.decide([small], 0.001)[0]
    assert decided.verdict == "insufficient data" and decided.needed == pytest.approx(needed, rel=0.2)
    assert drift.size_to_decide("jensen_shannon_divergence", baseline[:3] / 1000, baseline[:3], minimum) is None


FASHION = Path("/usr/share/datasets/fashion-mnist")  # the README's install command puts it there


@pytest.mark.skipif(not FASHION.is_dir(), reason="needs the dataset-fashion-mnist package of the README's install")
def test_the_readme_sizes_that_decide_on_fashion_mnist():
    """The README's figures: against Fashion-MNIST's 60,000 train images, a clean batch needs 4,200 to 12,000
    images to show each summary feature within JSD 0.0005, and about 1,800 for the label's 0.03; with the
    curated schema's measured minimums 4,800 to 75,000, and about 14,000 for the label."""
    from components import image_features
    from components.idx import read_idx
    from components.schema import load_schema

    def counts(prefix: str) -> dict[str, np.ndarray]:
        features = image_features.summarize(read_idx(FASHION / f"{prefix}-images-idx3-ubyte.gz"))
        return drift.histograms({**features, "label": read_idx(FASHION / f"{prefix}-labels-idx1-ubyte.gz")})

    train, test = counts("train"), counts("t10k")
    rule = {name: ("l_infinity", 0.03) if name == "label" else ("jensen_shannon_divergence", 0.0005) for name in train}
    needed = {name: drift.size_to_decide(rule[name][0], train[name], test[name], rule[name][1]) for name in train}
    assert 1_500 <= needed.pop("label") <= 2_100
    assert 4_000 <= min(needed.values()) and max(needed.values()) <= 12_500, needed
    # With the curated schema's measured minimums.
    rule = drift.comparators(load_schema(Path(__file__).resolve().parent.parent / "schemas" / "fashion_mnist.pbtxt"))
    needed = {name: drift.size_to_decide(measure, train[name], test[name], minimum)
              for name, (measure, minimum) in rule.items()}
    assert 13_000 <= needed.pop("label") <= 14_500
    assert needed["center_col"] == min(needed.values()) and 4_500 <= needed["center_col"] <= 5_000, needed
    assert needed["background"] == max(needed.values()) and 70_000 <= needed["background"] <= 80_000, needed


def test_a_fiftieth_of_a_batch_dimmed_rotated_or_mirrored_is_drift_under_the_measured_minimums():
    """10,000 Fashion-MNIST test images against 50,000 train images under the curated schema: 2% of the batch
    halved in brightness, rotated 15 degrees or mirrored drifts, on (at least) the feature made to see it;
    unchanged, it does not."""
    from scipy import ndimage

    from components.idx import read_idx
    from components.schema import load_schema

    train = read_idx(FASHION / "train-images-idx3-ubyte.gz")[:50000]
    test = read_idx(FASHION / "t10k-images-idx3-ubyte.gz")
    rule = drift.comparators(load_schema(Path(__file__).resolve().parent.parent / "schemas" / "fashion_mnist.pbtxt"))
    rule.pop("label")
    baseline = drift.histograms(image_features.summarize(train))
    changed = np.random.default_rng(0).random(len(test)) < 0.02
    changes = {"max_intensity": lambda x: x // 2, "mass_offset_col": lambda x: x[:, :, ::-1],
               "none": lambda x: x}
    changes["max_intensity "] = lambda x: ndimage.rotate(x.astype(np.float32), 15, axes=(1, 2), reshape=False,
                                                        order=1).round().clip(0, 255).astype(np.uint8)
    for feature, change in changes.items():
        batch = test.copy()
        batch[changed] = change(test[changed])
        decided = drift.decide(drift.tests_of(baseline, drift.histograms(image_features.summarize(batch)), rule,
                                              "drift"), 0.001)
        drifted = {d.feature for d in decided if d.drifted}
        assert feature.strip() in drifted if feature != "none" else not drifted, (feature, drifted)


@pytest.mark.parametrize("size", [25, 50, 100])
def test_a_class_absent_from_a_small_batch_by_chance_is_not_label_drift(size):
    """0.9^50: a tenth of 50 images is absent from 0.5% of batches, from 5% with ten classes; a standard
    error from its zero share would call each of those drift."""
    rng = np.random.default_rng(size)
    baseline = rng.multinomial(60_000, np.full(10, 0.1)) * 1.0
    p_values = [drift.interval_test("l_infinity", baseline, rng.multinomial(size, np.full(10, 0.1)) * 1.0, 0.03)[3]
                for _ in range(1000)]
    assert np.mean(np.array(p_values) <= 0.01) <= 0.01
