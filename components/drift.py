"""Drift detection: fixed-bucket histograms computed inside TFDV statistics, and a statistical test between them.

TFDV's own Jensen-Shannon divergence compares histograms whose buckets were chosen separately for
each dataset, which reads well above 0 on identically distributed data; and its L-infinity norm only
applies to categorical features. Here every dataset is bucketed on the same fixed boundaries, stored
in the statistics proto as a custom statistic, so a saved statistics file can be compared later. Two
histograms are compared by a test of an interval null: "the effect (JSD or L-infinity) is at most the
schema's minimum", not "the two are equal". A batch drifts only when its effect is shown to exceed that
minimum at the false-alarm rate the user sets, so sampling noise larger than the minimum (small batches)
is never taken for drift, and a huge batch does not alarm on a trivial difference.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from components import image_features

HISTOGRAM = "fixed_histogram"  # name of the custom statistic holding the shared-bucket histogram
# Label buckets: one per class up to 63; labels beyond share the last (EMNIST ByClass has 62 classes).
LABEL, LABEL_BUCKETS = "label", 64


@dataclass(frozen=True)
class Distance:
    """One feature's test between two datasets: drifted when the test rejects at its level `alpha` and the
    effect size (`distance`) reaches the schema's minimum (`threshold`)."""

    comparison: str  # e.g. "skew: train vs test", "drift: previous span train vs train"
    feature: str
    measure: str  # the effect size: "jensen_shannon_divergence", "l_infinity", "mmd2"
    distance: float  # the effect size
    threshold: float  # the minimum effect size: the schema's
    test: str  # "G-test" on shared buckets, or "MMD" on a model's embeddings
    statistic: float
    dof: int  # degrees of freedom (0: not a chi-squared statistic)
    p_value: float  # the chance of a statistic this large between samples of one distribution
    alpha: float  # the level this test was held to, its share of the check's false-positive rate
    drifted: bool


def boundaries() -> dict[str, np.ndarray]:
    """Bucket edges of every histogrammed feature: summary features over their range, label per class."""
    edges = {name: np.linspace(low, high, image_features.BUCKETS + 1)
             for name, (low, high) in image_features.RANGES.items()}
    edges[LABEL] = np.arange(LABEL_BUCKETS + 1) - 0.5
    return edges


def histogram_generator():
    """A TFDV CombinerStatsGenerator adding the fixed histograms to the statistics it runs in."""
    from components.histogram_generator import FixedHistograms  # imports TFDV: only when computing

    return FixedHistograms(boundaries(), HISTOGRAM)


def fixed_histogram(stats, feature: str) -> np.ndarray | None:
    """The shared-bucket counts of `feature` in a DatasetFeatureStatistics, or None if absent."""
    for f in stats.features:
        if f.path.step and f.path.step[0] == feature:
            for custom in f.custom_stats:
                if custom.name == HISTOGRAM:
                    return np.array([b.sample_count for b in custom.histogram.buckets], np.float64)
    return None


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between two count vectors."""
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a):
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return max(0.0, (kl(p) + kl(q)) / 2)


def l_infinity(p: np.ndarray, q: np.ndarray) -> float:
    """Largest difference between two normalised count vectors."""
    return float(np.max(np.abs(p / p.sum() - q / q.sum())))


# Buckets expecting fewer images than this are pooled into one cell of rare values; with Williams'
# correction the G statistic's chi-squared law then held at levels 0.05 to 0.0001 on 20,000 clean batches
# of 100 and 500 images (benchmarks/drift_power.py measures the rate on real batches).
MIN_EXPECTED = 5.0
MIN_RARE = 1.0  # the rare cell stays a cell of its own when it expects at least this many


def merged(p: np.ndarray, q: np.ndarray, min_expected: float = MIN_EXPECTED) -> tuple[np.ndarray, np.ndarray]:
    """The two count vectors with every bucket that expects fewer than `min_expected` images of the smaller
    sample (under the pooled distribution) pooled into one last cell of rare values, which joins the
    smallest other cell when it expects fewer than `MIN_RARE`. Sparse buckets are where a shift shows
    first (blank images in the darkest bucket), so they are pooled with each other, not with the bulk.

    Example:
        >>> merged(np.array([0., 320, 0]), np.array([20., 60, 0]))
        (array([320.,   0.]), array([60., 20.]))
    """
    weight = min(p.sum(), q.sum()) / (p.sum() + q.sum())
    expected = (p + q) * weight
    kept = expected >= min_expected
    a, b = list(p[kept]), list(q[kept])
    rare = (float(p[~kept].sum()), float(q[~kept].sum()))
    if sum(rare) * weight >= MIN_RARE or not a:
        a.append(rare[0])
        b.append(rare[1])
    elif sum(rare):
        smallest = int(np.argmin(np.add(a, b)))
        a[smallest] += rare[0]
        b[smallest] += rare[1]
    keep = [i for i in range(len(a)) if a[i] + b[i] > 0]
    return np.array(a, np.float64)[keep], np.array(b, np.float64)[keep]


def g_test(p: np.ndarray, q: np.ndarray) -> tuple[float, int, float]:
    """Two-sample G-test of homogeneity on two count vectors over the same buckets: the statistic (with
    Williams' correction for small samples), its degrees of freedom and its p-value (the chance of a
    statistic this large if both samples come from one distribution). Sparse buckets are merged first.

    Example:
        >>> g_test(np.array([50., 50.]), np.array([90., 10.]))[2] < 1e-6
        True
    """
    from scipy import special, stats

    a, b = merged(p, q)
    if len(a) < 2:  # everything in one bucket on both sides: nothing to tell them apart
        return 0.0, 0, 1.0
    n, total = np.array([a.sum(), b.sum()]), a.sum() + b.sum()
    pooled = (a + b) / total
    g = 2 * float(np.sum(special.xlogy(a, a / (pooled * n[0])))
                  + np.sum(special.xlogy(b, b / (pooled * n[1]))))
    dof = len(a) - 1
    williams = 1 + (total * np.sum(1 / n) - 1) * (total * np.sum(1 / (a + b)) - 1) / (6 * total * dof)
    g = max(g / williams, 0.0)
    return g, dof, float(stats.chi2.sf(g, dof))


def interval_test(measure: str, p: np.ndarray, q: np.ndarray, threshold: float) -> tuple[str, float, int, float]:
    """A test of the interval null "the effect `measure` between the distributions behind counts `p` and
    `q` is at most `threshold`": the test's name, its statistic, degrees of freedom and p-value.

    JSD: the G statistic (`g_test`) is about noncentral chi-squared, its noncentrality the effect over
    c = (1/n + 1/m) / (8 ln 2) (for small effects G ~ 8 ln 2 JSD nm / (n + m)); at the null's edge,
    JSD = threshold, the p-value is the tail of the noncentral law with noncentrality threshold / c.
    With a threshold of 0 this is the G-test of equality.

    L-infinity: per bucket, a z-test of |share difference| <= threshold (unpooled standard error, half an
    image added to empty cells), Bonferroni over the buckets either side holds: the largest share
    difference exceeds the threshold when any bucket's does.

    Example:
        >>> interval_test("jensen_shannon_divergence", np.array([500., 500]), np.array([400., 600]), 0.0005)[3] < 1e-3
        True
    """
    from scipy import stats

    n, m = float(p.sum()), float(q.sum())
    if measure == "jensen_shannon_divergence":
        g, dof, _ = g_test(p, q)
        if dof == 0:
            return "G-test", 0.0, 0, 1.0
        noncentrality = threshold * 8 * np.log(2) / (1 / n + 1 / m)
        tail = stats.ncx2.sf(g, dof, noncentrality) if noncentrality > 0 else stats.chi2.sf(g, dof)
        return "G-test", g, dof, float(tail)
    used = (p + q) > 0
    a, b = (p[used] + 0.5) / (n + 1), (q[used] + 0.5) / (m + 1)
    se = np.sqrt(a * (1 - a) / n + b * (1 - b) / m)
    z = (np.abs(p[used] / n - q[used] / m) - threshold) / se
    return "z-test", float(z.max()), 0, float(min(1.0, used.sum() * stats.norm.sf(z.max())))


def decide(distances: list[Distance], false_positive_rate: float) -> list[Distance]:
    """Sets `alpha` and `drifted` of every test of one check, keeping its false-alarm rate at most
    `false_positive_rate` however many features and comparisons it holds (Holm's step-down: the i-th
    smallest of m p-values is compared with rate / (m - i + 1), until the first that passes).

    Each p-value is of the interval null "the effect is at most the schema's minimum effect size" (the
    `threshold`, see `interval_test`): a test that rejects shows the effect above that minimum.

    Example:
        >>> p = np.array([500., 500])
        >>> tests = [bucket_test("drift", "label", "l_infinity", p, np.array([300., 700]), 0.05),
        ...          bucket_test("drift", "bbox_width", "l_infinity", p, np.array([490., 510]), 0.05)]
        >>> [(d.feature, d.alpha, d.drifted) for d in decide(tests, 0.001)]
        [('label', 0.0005, True), ('bbox_width', 0.001, False)]
    """
    order = sorted(range(len(distances)), key=lambda i: distances[i].p_value)
    decided: dict[int, Distance] = {}
    rejecting = True
    for rank, i in enumerate(order):
        d, alpha = distances[i], false_positive_rate / (len(distances) - rank)
        rejecting = rejecting and d.p_value <= alpha
        decided[i] = dataclasses.replace(d, alpha=alpha, drifted=rejecting and d.distance >= d.threshold)
    return [decided[i] for i in range(len(distances))]


def bucket_test(comparison: str, feature: str, measure: str, p: np.ndarray, q: np.ndarray,
                threshold: float) -> Distance:
    """One undecided test (`decide` sets its level) of two count vectors: whether the effect size `measure`
    ("jensen_shannon_divergence" or "l_infinity") exceeds the minimum effect `threshold` (`interval_test`)."""
    test, statistic, dof, p_value = interval_test(measure, p, q, threshold)
    effect = jensen_shannon(p, q) if measure == "jensen_shannon_divergence" else l_infinity(p, q)
    return Distance(comparison, feature, measure, round(effect, 6), threshold, test, round(statistic, 3), dof,
                    p_value, 0.0, False)


def compare(baseline, current, schema, comparison: str, comparator: str = "drift_comparator") -> list[Distance]:
    """Tests every schema feature that has a `drift_comparator` (or `skew_comparator`); `decide` then
    says which drifted, over all the tests of the check.

    Args:
        baseline, current: DatasetFeatureStatistics protos computed with `histogram_generator()`.
        schema: the TFDV Schema proto holding the minimum effect sizes (the comparators' thresholds).
        comparison: what is compared, for the reader (e.g. "skew: train vs test").
        comparator: which of the schema's comparators to apply.
    """
    names = comparators(schema, comparator)
    return tests_of({n: fixed_histogram(baseline, n) for n in names}, {n: fixed_histogram(current, n) for n in names},
                    names, comparison)


def tests_of(baseline: dict[str, np.ndarray | None], current: dict[str, np.ndarray | None],
             names: dict[str, tuple[str, float]], comparison: str) -> list[Distance]:
    """Undecided tests of every feature of `names` (feature: (effect measure, minimum effect), see
    `comparators`) that both sides' shared-bucket counts hold, from statistics or from `histograms`."""
    result = []
    for name, (measure, threshold) in names.items():
        p, q = baseline.get(name), current.get(name)
        if p is None or q is None or not p.sum() or not q.sum():
            continue  # an empty or featureless dataset is validation's finding, not a distance
        if len(p) != len(q):  # statistics saved before the label had 64 buckets: classes beyond held none
            p, q = (np.pad(h, (0, max(len(p), len(q)) - len(h))) for h in (p, q))
        result.append(bucket_test(comparison, name, measure, p, q, threshold))
    return result


def moved_bucket(feature: str, p: np.ndarray, q: np.ndarray) -> dict:
    """The bucket whose share grew most from baseline counts `p` to current counts `q`: its bounds and
    both shares (where to look for what changed).

    Example:
        >>> moved_bucket("label", np.array([3., 1]), np.array([1., 3]))
        {'feature': 'label', 'low': 0.5, 'high': 1.5, 'baseline_share': 0.25, 'current_share': 0.75}
    """
    gain = q / q.sum() - p / p.sum()
    i, edges = int(np.argmax(gain)), boundaries()[feature]
    return {"feature": feature, "low": round(float(edges[i]), 3), "high": round(float(edges[i + 1]), 3),
            "baseline_share": round(float(p[i] / p.sum()), 4), "current_share": round(float(q[i] / q.sum()), 4)}


def comparators(schema, comparator: str = "drift_comparator") -> dict[str, tuple[str, float]]:
    """feature: (effect size measure, minimum effect) of every schema feature with that comparator."""
    found = {}
    for feature in schema.feature:
        spec = getattr(feature, comparator)
        if spec.HasField("jensen_shannon_divergence"):
            found[feature.name] = ("jensen_shannon_divergence", spec.jensen_shannon_divergence.threshold)
        elif spec.HasField("infinity_norm"):
            found[feature.name] = ("l_infinity", spec.infinity_norm.threshold)
    return found


def histograms(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The shared-bucket counts of feature values computed outside TFDV (e.g. `image_features.summarize`
    plus `label`), bucketed exactly as the statistics' generator buckets them.

    Example:
        >>> histograms({"label": np.array([0, 1, 1])})["label"][:3]
        array([1., 2., 0.])
    """
    edges = boundaries()
    return {name: np.histogram(np.clip(values, edges[name][0], edges[name][-1]), bins=edges[name])[0].astype(float)
            for name, values in features.items()}
