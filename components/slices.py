"""Slices of the test split that matter for images (each class, and quarters of the summary features: the
darkest, the smallest, the most off-centre images), their metrics with confidence intervals, and per-slice gates."""
from __future__ import annotations

import math

import numpy as np

from components import image_features

# Summary features whose quarters are slices: brightness, ink area, the box's size and the item's position.
SLICED = ("mean_intensity", "ink_fraction", "bbox_height", "bbox_width", "center_row", "center_col", "bbox_offset")
QUARTERS = ("lowest quarter", "second quarter", "third quarter", "highest quarter")
CONFIDENCE = 0.95  # of the intervals shown; the gates widen theirs to hold over all slices at once
WHOLE = 0.9  # a feature's "quarter" holding this share of the images or more is not a slice
WRONG = 8  # indices of misclassified images kept per slice, for the report


def wilson(right: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a proportion `right`/`n`: sound at 0 and 1 and for small slices.

    Example:
        >>> [round(x, 3) for x in wilson(95, 100)]
        [0.888, 0.978]
    """
    from scipy import stats

    if n == 0:
        return 0.0, 1.0
    z, p = stats.norm.isf((1 - confidence) / 2), right / n
    centre, half = (p + z * z / (2 * n)), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))


def paired_difference(ours: np.ndarray, theirs: np.ndarray, confidence: float = CONFIDENCE
                      ) -> tuple[float, float, float]:
    """The accuracy difference of two models on the same images (booleans: each one right) and its interval,
    from the images where they disagree (a paired, McNemar-style standard error, with one disagreement added
    to each side so that a slice without any still has a width).

    Example:
        >>> a, b = np.array([True] * 90 + [False] * 10), np.array([True] * 80 + [False] * 20)
        >>> [round(x, 3) for x in paired_difference(a, b)]
        [0.1, 0.038, 0.162]
    """
    from scipy import stats

    n = len(ours)
    if n == 0:
        return 0.0, -1.0, 1.0
    gained, lost = float(np.sum(ours & ~theirs)), float(np.sum(~ours & theirs))
    change = (gained - lost) / n
    b, c = gained + 0.5, lost + 0.5
    se = math.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
    z = stats.norm.isf((1 - confidence) / 2)
    return change, max(-1.0, change - z * se), min(1.0, change + z * se)


def known(features: tuple[str, ...]) -> tuple[str, ...]:
    """`features` when each is a summary feature (`evaluate.slice_features`), else ConfigError naming the key.

    Example:
        >>> known(("mean_intensity", "brightness"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        engine.errors.ConfigError: config 'evaluate.slice_features': 'brightness' is not a summary feature; ...
    """
    from engine.errors import ConfigError

    for name in features:
        if name not in image_features.NAMES:
            raise ConfigError(f"config 'evaluate.slice_features': {name!r} is not a summary feature; expected some "
                              f"of {', '.join(image_features.NAMES)}")
    return features


def define(images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], min_size: int,
           features: tuple[str, ...] = SLICED) -> tuple[list[dict], list[np.ndarray]]:
    """The slices of images [N, 28, 28] with labels: one per class, and one per quarter of each of `features`
    (summary features; its edges the test split's quartiles), each with at least `min_size` images; returns
    their descriptions (name, feature, bounds) and boolean masks, and the slices too small as descriptions
    with `"too_small": True` and no mask. A quarter of nine tenths of the images or more is left out.

    Example:
        >>> images = np.zeros((8, 28, 28), np.uint8); images[4:, 10:18, 10:18] = 255
        >>> found, masks = define(images, np.array([0, 1] * 4), ("a", "b"), 4)
        >>> [s["name"] for s in found][:3], int(masks[0].sum())
        (['class a', 'class b', 'mean_intensity: lowest quarter'], 4)
    """
    summaries = image_features.summarize(images) if features else {}
    found, masks = [], []

    def add(description: dict, mask: np.ndarray) -> None:
        if mask.sum() >= min_size:
            found.append(description)
            masks.append(mask)
        else:
            found.append({**description, "too_small": True, "n": int(mask.sum())})

    for k, name in enumerate(classes):
        add({"name": f"class {name}", "feature": "label", "low": k, "high": k}, labels == k)
    for feature in features:
        values = summaries[feature]
        edges = [-np.inf, *np.quantile(values, [0.25, 0.5, 0.75]), np.inf] if len(values) else [-np.inf, np.inf]
        for i in range(len(edges) - 1):
            mask = (values > edges[i]) & (values <= edges[i + 1])
            # Tied quartiles (a value most images share) leave a quarter empty, or one holding nearly every
            # image: that is the overall figure again, and would only widen the other slices' bounds.
            if mask.any() and mask.sum() < WHOLE * len(values):
                add({"name": f"{feature}: {QUARTERS[i]}", "feature": feature,
                     "low": None if i == 0 else round(float(edges[i]), 4),
                     "high": None if i == len(edges) - 2 else round(float(edges[i + 1]), 4)}, mask)
    return found, masks


def measure(found: list[dict], masks: list[np.ndarray], right: np.ndarray, theirs: np.ndarray | None = None
            ) -> list[dict]:
    """Each slice of `define` with its metrics: `n`, `accuracy` and its interval (`low`, `high`), the indices
    of up to `WRONG` images it got wrong (`wrong`); with `theirs`
    (whether the serving model was right on each image), `baseline_accuracy` and the paired `change` with its
    interval. Slices too small keep their description alone.

    Example:
        >>> measure([{"name": "class a"}], [np.array([True, True, False])], np.array([True, False, True]))[0]["accuracy"]
        0.5
    """
    measured, masks = [], iter(masks)
    for s in found:
        if s.get("too_small"):
            measured.append(s)
            continue
        mask = next(masks)
        n, hits = int(mask.sum()), int(right[mask].sum())
        low, high = wilson(hits, n)
        row = {**s, "n": n, "accuracy": round(hits / n, 4), "low": round(low, 4), "high": round(high, 4),
               "wrong": np.flatnonzero(mask & ~right)[:WRONG].tolist()}
        if theirs is not None:
            change, lower, upper = paired_difference(right[mask], theirs[mask])
            row.update(baseline_accuracy=round(float(theirs[mask].mean()), 4), change=round(change, 4),
                       change_low=round(lower, 4), change_high=round(upper, 4))
        measured.append(row)
    return measured


def gate(measured: list[dict], masks: list[np.ndarray], right: np.ndarray, theirs: np.ndarray | None,
         min_accuracy: float | None, max_regression: float | None, against: str) -> list[tuple[bool, str]]:
    """The per-slice checks, as (passed, reason): a slice fails only when its accuracy is *shown* below
    `min_accuracy`, or its change against the serving model shown worse than `-max_regression`, by a one-sided
    bound that holds at 95% over all the slices at once (Bonferroni), so small slices do not block by noise.

    Example:
        >>> right = np.array([True] * 150 + [False] * 150)
        >>> found, masks = [{"name": "class a"}], [np.ones(300, bool)]
        >>> gate(measure(found, masks, right), masks, right, None, 0.6, None, "")[0][0]
        False
    """
    kept = [s for s in measured if not s.get("too_small")]
    if not kept or (min_accuracy is None and (max_regression is None or theirs is None)):
        return []
    # a two-sided interval at 1 - 2a holds one side at 1 - a; a = 5% shared by the slices
    confidence = 1 - 2 * (1 - CONFIDENCE) / len(kept)
    low_accuracy, regressed = [], []
    for s, mask in zip(kept, masks):
        n, hits = s["n"], int(right[mask].sum())
        if min_accuracy is not None and wilson(hits, n, confidence)[1] < min_accuracy:
            low_accuracy.append(f"{s['name']} ({n:,} images): {s['accuracy']:.4f} [{s['low']:.4f}, {s['high']:.4f}]")
        if max_regression is not None and theirs is not None:
            upper = paired_difference(right[mask], theirs[mask], confidence)[2]
            if upper < -max_regression:
                regressed.append(f"{s['name']} ({n:,} images): {s['change']:+.4f} [{s['change_low']:+.4f}, "
                                 f"{s['change_high']:+.4f}]")
    checks = []
    if min_accuracy is not None:
        checks.append((not low_accuracy, f"slice accuracy shown below min_slice_accuracy {min_accuracy:.4f}: "
                       + "; ".join(low_accuracy) if low_accuracy else
                       f"no slice's accuracy shown below min_slice_accuracy {min_accuracy:.4f} ({len(kept)} slices)"))
    if max_regression is not None and theirs is not None:
        checks.append((not regressed, f"slice accuracy vs {against} shown worse than max_slice_regression "
                       f"{max_regression:.4f}: " + "; ".join(regressed) if regressed else
                       f"no slice shown worse than {against} by more than max_slice_regression {max_regression:.4f} "
                       f"({len(kept)} slices)"))
    return checks
