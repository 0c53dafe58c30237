"""Drift measurement: fixed-bucket histograms computed inside TFDV statistics, and the distances between them.

TFDV's own Jensen-Shannon divergence compares histograms whose buckets were chosen separately for
each dataset, which reads well above 0 on identically distributed data; and its L-infinity norm only
applies to categorical features. Here every dataset is bucketed on the same fixed boundaries, stored
in the statistics proto as a custom statistic, so a saved statistics file can be compared later.
"""
from __future__ import annotations

import numpy as np

from components import image_features
from pipeline.engine.artifacts import Distance

HISTOGRAM = "fixed_histogram"  # name of the custom statistic holding the shared-bucket histogram
# Label buckets: one per class up to 63; labels beyond share the last (EMNIST ByClass has 62 classes).
LABEL, LABEL_BUCKETS = "label", 64


def boundaries() -> dict[str, np.ndarray]:
    """Bucket edges of every histogrammed feature: summary features over their range, label per class."""
    edges = {name: np.linspace(low, high, image_features.BUCKETS + 1)
             for name, (low, high) in image_features.RANGES.items()}
    edges[LABEL] = np.arange(LABEL_BUCKETS + 1) - 0.5
    return edges


def histogram_generator():
    """A TFDV CombinerStatsGenerator adding the fixed histograms to the statistics it runs in.

    Example:
        >>> options = tfdv.StatsOptions(generators=[histogram_generator()])
    """
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


def sampling_noise(measure: str, p: np.ndarray, q: np.ndarray) -> float:
    """The distance two samples of these sizes reach by chance alone, 999 times in 1000.

    Two samples of one distribution are never identical: for k occupied buckets and sizes n1, n2,
    8·ln2·JSD / (1/n1 + 1/n2) follows a chi-squared law with k-1 degrees of freedom, and each
    class share differs by a normal error of variance m(1-m)(1/n1 + 1/n2). Adding this to the
    schema's threshold keeps small batches from raising false alarms; on large data it vanishes.
    """
    from scipy import stats

    n1, n2 = p.sum(), q.sum()
    scale = 1 / n1 + 1 / n2
    mixture = (p / n1 + q / n2) / 2
    if measure == "jensen_shannon_divergence":
        occupied = int(np.count_nonzero(mixture))
        return float(stats.chi2.ppf(0.999, max(occupied - 1, 1)) * scale / (8 * np.log(2)))
    return float(stats.norm.ppf(0.9995) * np.sqrt(np.max(mixture * (1 - mixture)) * scale))


def compare(baseline, current, schema, comparison: str, comparator: str = "drift_comparator") -> list[Distance]:
    """Distances for every schema feature that has a `drift_comparator` (or `skew_comparator`).

    Args:
        baseline, current: DatasetFeatureStatistics protos computed with `histogram_generator()`.
        schema: the TFDV Schema proto holding the thresholds.
        comparison: what is compared, for the reader (e.g. "skew: train vs test").
        comparator: which of the schema's comparators to apply.

    Example:
        >>> [d.feature for d in compare(train, test, schema, "skew: train vs test", "skew_comparator") if d.drifted]
        ['mean_intensity']
    """
    result = []
    for feature in schema.feature:
        spec = getattr(feature, comparator)
        if spec.HasField("jensen_shannon_divergence"):
            measure, threshold, fn = "jensen_shannon_divergence", spec.jensen_shannon_divergence.threshold, jensen_shannon
        elif spec.HasField("infinity_norm"):
            measure, threshold, fn = "l_infinity", spec.infinity_norm.threshold, l_infinity
        else:
            continue
        p, q = fixed_histogram(baseline, feature.name), fixed_histogram(current, feature.name)
        if p is None or q is None or not p.sum() or not q.sum():
            continue  # an empty or featureless dataset is validation's finding, not a distance
        if len(p) != len(q):  # statistics saved before the label had 64 buckets: classes beyond held none
            p, q = (np.pad(h, (0, max(len(p), len(q)) - len(h))) for h in (p, q))
        distance, noise = round(fn(p, q), 6), round(sampling_noise(measure, p, q), 6)
        result.append(Distance(comparison, feature.name, measure, distance, threshold, noise,
                               distance > threshold + noise))
    return result
