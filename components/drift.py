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
from components.drift_tests import (WITHIN_LEVEL, g_test, interval_test, jensen_shannon, l_infinity,  # noqa: F401
                                    merged, size_to_decide, within_test)

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
    # The mirrored test's p-value: the chance of a difference this small if the effect were the minimum.
    p_within: float = 1.0
    # The current batch size at which nine in ten clean batches are shown within the minimum, when this one
    # shows neither; None: no size would (the baseline is too small); 0: this batch is that large already,
    # its effect sits near the minimum.
    needed: int | None = None
    # "drifted", "ok" (shown within the minimum; for a test of equality, no difference found), "insufficient
    # data" or "near the minimum"
    verdict: str = ""


def _verdict(verdict: str, drifted: bool) -> str:
    """A test's verdict; a record written before verdicts existed reads as drifted or ok."""
    return verdict or ("drifted" if drifted else "ok")


def verdict_text(d: dict) -> str:
    """A test's verdict in a few words, from its dict (`--json`, the summary) or a `Distance`.

    Example:
        >>> verdict_text({"drifted": False, "verdict": "insufficient data", "needed": 2400})
        'too few images: about 2,400 would decide'
    """
    verdict = _verdict(d.get("verdict", ""), d["drifted"])
    if verdict in ("drifted", "ok"):
        return "DRIFTED" if verdict == "drifted" else "ok"
    if verdict == "near the minimum":
        return "undecided: the effect is near the minimum"
    needed = d.get("needed")
    return f"too few images: about {needed:,} would decide" if needed else "too few images: no batch the check takes decides"


def boundaries() -> dict[str, np.ndarray]:
    """Bucket edges of every histogrammed feature: summary features over their range, label per class."""
    edges = {name: np.linspace(low, high, image_features.buckets(name) + 1)
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


def decide(distances: list[Distance], false_positive_rate: float) -> list[Distance]:
    """Sets `alpha` and `drifted` of every test of one check, keeping its false-alarm rate at most
    `false_positive_rate` however many features and comparisons it holds (Holm's step-down: the i-th
    smallest of m p-values is compared with rate / (m - i + 1), until the first that passes).

    Each p-value is of the interval null "the effect is at most the schema's minimum effect size" (the
    `threshold`, see `interval_test`): a test that rejects shows the effect above that minimum. One that
    does not is "ok" when its mirrored test (`within_test`) shows the effect within the minimum, else
    "insufficient data": the batch is too small to tell either way.

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
        drifted = rejecting and d.distance >= d.threshold
        verdict = ("drifted" if drifted else "ok" if d.p_within <= WITHIN_LEVEL or d.threshold <= 0
                   else "near the minimum" if d.needed == 0 else "insufficient data")
        decided[i] = dataclasses.replace(d, alpha=alpha, drifted=drifted, verdict=verdict)
    return [decided[i] for i in range(len(distances))]


def check_verdict(distances: list[Distance], drifted: bool = False) -> dict:
    """A decided check's verdict: "drifted" when any test drifted (or `drifted`, found otherwise),
    "insufficient data" when a test could tell neither, else "ok"; with `needed`, the current batch size
    that would decide every test whose baseline is large enough, and `baseline_too_small`, the features whose
    baseline is not.

    Example:
        >>> d = Distance("drift", "f", "l_infinity", 0.1, 0.03, "z-test", 1.0, 0, 0.5, 0.001, False,
        ...              0.4, 900, "insufficient data")
        >>> check_verdict([d])
        {'verdict': 'insufficient data', 'needed': 900, 'baseline_too_small': [], 'near_minimum': []}
    """
    verdicts = [_verdict(d.verdict, d.drifted) for d in distances]
    undecided = [d for d, v in zip(distances, verdicts) if v in ("insufficient data", "near the minimum")]
    verdict = "drifted" if drifted or "drifted" in verdicts else "insufficient data" if undecided else "ok"
    if verdict == "drifted":
        return {"verdict": verdict, "needed": None, "baseline_too_small": [], "near_minimum": []}
    sizes = [d.needed for d in undecided if d.needed]
    return {"verdict": verdict, "needed": max(sizes) if sizes else None,
            "baseline_too_small": [d.feature for d in undecided if d.needed is None],
            "near_minimum": [d.feature for d in undecided if d.needed == 0]}


def undecided_text(report: dict) -> str:
    """Why a check that found no drift could not say ok, in one line: the batch size that would decide.

    Example:
        >>> undecided_text({"needed": None, "baseline_too_small": ["center_row"]})
        'too few current images to tell drift from noise; no batch the check takes would decide center_row'
    """
    needed, small, near = report.get("needed"), report.get("baseline_too_small"), report.get("near_minimum")
    reasons = [f"about {needed:,} would decide" if needed else "",
               f"no batch the check takes would decide {', '.join(small)}" if small else "",
               f"the effect of {', '.join(near)} is near its minimum (more images narrow it)" if near else ""]
    return "too few current images to tell drift from noise; " + "; ".join(r for r in reasons if r)


def undecided_at(needed: int | None, size: float) -> int | None:
    """`needed` for a batch of `size` images: 0 when the size that decides clean batches is no larger than this
    one (then its effect is near the minimum, not its size too small).

    Example:
        >>> undecided_at(900, 1000), undecided_at(900, 500), undecided_at(None, 500)
        (0, 900, None)
    """
    return 0 if needed is not None and needed <= size else needed


def bucket_test(comparison: str, feature: str, measure: str, p: np.ndarray, q: np.ndarray,
                threshold: float) -> Distance:
    """One undecided test (`decide` sets its level) of two count vectors: whether the effect size `measure`
    ("jensen_shannon_divergence" or "l_infinity") exceeds the minimum effect `threshold` (`interval_test`)."""
    test, statistic, dof, p_value = interval_test(measure, p, q, threshold)
    effect = jensen_shannon(p, q) if measure == "jensen_shannon_divergence" else l_infinity(p, q)
    within = within_test(measure, p, q, threshold)
    needed = size_to_decide(measure, p, q, threshold) if within > WITHIN_LEVEL and threshold > 0 else None
    needed = undecided_at(needed, q.sum())
    return Distance(comparison, feature, measure, round(effect, 6), threshold, test, round(statistic, 3), dof,
                    p_value, 0.0, False, within, needed)


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
