"""The two-sample tests behind drift: effect sizes, the G-test, the interval null and its mirror, the test that
an effect is within the minimum (too little data to tell either way is its own verdict)."""
from __future__ import annotations

import math

import numpy as np

# The confidence at which a test that did not alarm also shows the effect within the schema's minimum ("ok");
# a batch that shows neither is too small to decide. A missed drift is not a false alarm, so the usual 95%.
WITHIN_LEVEL = 0.05
DECIDED_SHARE = 0.9  # the share of batches without drift that a batch of the size needed shows ok


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

    L-infinity: per bucket, a z-test of |share difference| <= threshold (`_share_differences`), both tails,
    Bonferroni over the buckets: the largest share difference exceeds the threshold when any bucket's does.

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
    moved, se = _share_differences(p, q)
    z = (moved - threshold) / se
    # both tails of the difference: at its edge it is +threshold or -threshold
    tails = stats.norm.sf(z) + stats.norm.sf((moved + threshold) / se)
    return "z-test", float(z.max()), 0, float(min(1.0, len(moved) * tails.min()))


def _share_differences(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per bucket either side holds: the share difference |p/n - q/m| and its standard error. Each side's
    variance is taken at the larger of the two shares (half an image added to each): a class absent from a
    small batch has no spread of its own, and a standard error from its zero share would make its absence,
    which happens by chance (0.9^50 of the time for a tenth of 50 images), look like proof.

    Example:
        >>> moved, se = _share_differences(np.full(10, 6000.), np.r_[0., np.full(9, 50 / 9)])
        >>> round(float(moved[0]), 3), round(float(se[0]), 3)
        (0.1, 0.042)
    """
    n, m = float(p.sum()), float(q.sum())
    used = (p + q) > 0
    share = np.maximum((p[used] + 0.5) / (n + 1), (q[used] + 0.5) / (m + 1))
    spread = share * (1 - share)
    return np.abs(p[used] / n - q[used] / m), np.sqrt(spread / n + spread / m)


def within_test(measure: str, p: np.ndarray, q: np.ndarray, threshold: float) -> float:
    """The p-value of the mirrored null "the effect `measure` is at least `threshold`": the chance of a
    difference this small between samples of distributions whose effect is the minimum. Below
    `WITHIN_LEVEL` the batch shows its effect within the minimum; a minimum of 0 cannot be shown (1.0).

    JSD: the lower tail of `interval_test`'s noncentral chi-squared law. L-infinity: every bucket's
    share difference z-tested below the minimum (an intersection-union test: the largest p-value).

    Example:
        >>> p = np.array([5000., 5000])
        >>> within_test("l_infinity", p, p, 0.03) < 0.01, within_test("l_infinity", p[:1] / 500, p[:1] / 500, 0.03) > 0.05
        (True, True)
    """
    from scipy import stats

    if threshold <= 0:
        return 1.0
    n, m = float(p.sum()), float(q.sum())
    if measure == "jensen_shannon_divergence":
        g, dof, _ = g_test(p, q)
        if dof == 0:  # one cell on both sides: no statistic; decided by size alone, as `size_to_decide` is
            g, dof = stats.chi2.ppf(DECIDED_SHARE, 1), 1
        # As the alarm's, this sees the buckets `merged` keeps apart: a shift among the rare values pooled into
        # one cell is out of its sight (a cell of mass r could hide up to r of JSD, which bounded strictly would
        # leave no batch of realistic size able to show a minimum of 0.0005).
        return float(stats.ncx2.cdf(g, dof, threshold * 8 * np.log(2) / (1 / n + 1 / m)))
    moved, se = _share_differences(p, q)
    return float(stats.norm.sf(((threshold - moved) / se).min()))


def size_to_decide(measure: str, p: np.ndarray, q: np.ndarray, threshold: float,
                   share: float = DECIDED_SHARE) -> int | None:
    """The current batch size (against the same baseline `p`) at which `share` of the batches without drift
    show their effect within `threshold` at `WITHIN_LEVEL`; None when no size can, the baseline being too
    small. `q` sets, with `p`, the buckets' shares and which are used (L-infinity), or the starting point of
    the degrees of freedom (JSD).

    Example:
        >>> size_to_decide("l_infinity", np.full(10, 6000.), np.full(10, 2.), 0.03)
        1836
    """
    from scipy import optimize, stats

    n = float(p.sum())
    if measure != "jensen_shannon_divergence":
        shares = (p + q) / (p.sum() + q.sum())
        spread, used = float(np.max(shares * (1 - shares))) or 0.25, int(np.count_nonzero(shares))
        # every used bucket's difference inside its (1 - share) two-sided band, and the band inside the minimum
        z = stats.norm.isf(WITHIN_LEVEL) + stats.norm.isf((1 - share) / (2 * max(used, 1)))
        inverse = (threshold / z) ** 2 / spread - 1 / n
        return math.ceil(1 / inverse) if inverse > 0 else None
    size = float(q.sum())
    for _ in range(4):  # a bigger batch keeps more buckets apart: its degrees of freedom grow with it
        dof = max(1, g_test(p, p * size / n)[1])
        typical = stats.chi2.ppf(share, dof)
        edge = optimize.brentq(lambda nc: stats.ncx2.cdf(typical, dof, nc) - WITHIN_LEVEL, 1e-9, 1e7)
        inverse = threshold * 8 * np.log(2) / edge - 1 / n
        if inverse <= 0:
            return None
        size = 1 / inverse
    return math.ceil(size)


def effect_upper_bound(measure: str, p: np.ndarray, q: np.ndarray, level: float = 0.01) -> float:
    """An upper confidence bound, at 1 - `level`, on the effect between the distributions behind counts `p`
    and `q`: the largest effect the mirrored tests would not reject. 0 when even no effect is unlikely to
    give a difference this small (the data then measure nothing above sampling noise).

    JSD: the noncentrality whose noncentral chi-squared law puts `level` below the G statistic, in JSD
    units (`interval_test`). L-infinity: the largest share difference plus its z bound, Bonferroni over
    the buckets.

    Example:
        >>> p = np.array([6000.] * 10)
        >>> round(effect_upper_bound("l_infinity", p, p / 6), 4)
        0.0107
    """
    from scipy import optimize, stats

    n, m = float(p.sum()), float(q.sum())
    if measure == "jensen_shannon_divergence":
        g, dof, _ = g_test(p, q)
        if dof == 0 or stats.chi2.cdf(g, dof) <= level:
            return 0.0
        scale = (1 / n + 1 / m) / (8 * np.log(2))
        high = max(1.0, 4 * g)
        while stats.ncx2.cdf(g, dof, high) > level:
            high *= 4
        return float(optimize.brentq(lambda nc: stats.ncx2.cdf(g, dof, nc) - level, 0.0, high) * scale)
    used = (p + q) > 0
    a, b = p[used] / n, q[used] / m
    se = np.sqrt(a * (1 - a) / n + b * (1 - b) / m)
    return float(np.max(np.abs(a - b) + stats.norm.isf(level / (2 * used.sum())) * se))
