"""Label shift without labels: the classes' mix of an unlabeled batch, estimated from the model's predictions.

Black-box shift estimation (Lipton, Wang and Smola, ICML 2018; the strongest label-shift detector in
Rabanser et al., "Failing Loudly", NeurIPS 2019): when only the classes' mix changes, the predicted-class
shares of a batch are C q, where C[i, j] is the chance the model predicts i for an image of class j,
measured on held-out labelled data, and q the batch's class shares; so q = C^-1 (predicted shares). The
estimate undoes the attenuation a model's mistakes put on the predicted classes' shift, and its variance
counts both the batch's sampling and the confusion matrix's own.
"""
from __future__ import annotations

import math

import numpy as np

from components.drift import Distance, undecided_at
from components.drift_tests import DECIDED_SHARE, MIN_EXPECTED, WITHIN_LEVEL


def confusion(predicted: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """Counts [predicted, true] of a model's predictions on labelled data.

    Example:
        >>> confusion(np.array([0, 1, 1]), np.array([0, 1, 0]), 2).tolist()
        [[1.0, 0.0], [1.0, 1.0]]
    """
    counts = np.zeros((classes, classes))
    np.add.at(counts, (predicted, labels), 1)
    return counts


def estimate(counts: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The class shares of a batch whose predicted-class counts are `predicted`, from the baseline's confusion
    `counts`: the estimate q, and its variance split into the batch's part per image (divide by the batch
    size) and the confusion matrix's part.

    The batch's part is taken at the predicted shares of baseline and batch pooled, as a test's variance is
    under its null: a class a small batch happens not to predict has no spread of its own, and a variance
    from its zero share would make that chance absence look like proof.

    Example:
        >>> counts = np.array([[90., 10], [10, 90]])  # a model right 90% of the time on each class
        >>> np.round(estimate(counts, np.array([260., 740]))[0], 3).tolist()
        [0.2, 0.8]
    """
    seen, conditional, inverse = _conditional(counts)
    q = inverse @ (predicted / max(predicted.sum(), 1))
    pooled = (counts.sum(axis=1) + predicted) / (counts.sum() + predicted.sum())
    return (q, *variances(inverse, conditional, seen, pooled, np.clip(q, 0, 1)))


def _conditional(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The images of each class the confusion `counts` saw, P(predicted i | class j) and its inverse."""
    seen = np.maximum(counts.sum(axis=0), 1)
    conditional = counts / seen
    return seen, conditional, np.linalg.pinv(conditional)


def variances(inverse: np.ndarray, conditional: np.ndarray, seen: np.ndarray, shares: np.ndarray,
              q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the variance of C^-1 mu per image of a batch whose predicted shares are `shares`, and the
    part the confusion matrix's own error adds for class shares `q` (delta method: dq = -C^-1 dC q)."""
    per_image = inverse @ (np.diag(shares) - np.outer(shares, shares)) @ inverse.T
    of_confusion = sum(q[j] ** 2 * inverse @ ((np.diag(conditional[:, j]) - np.outer(conditional[:, j],
                                                                                      conditional[:, j])) / seen[j])
                       @ inverse.T for j in range(len(q)))
    return np.diag(per_image), np.diag(of_confusion)


def estimable(labels: np.ndarray | None, size: int, classes: int) -> bool:
    """Whether baseline `labels` for `size` predictions can give a model's confusion over `classes`: one label
    per image, each a class, every class seen (an unseen class's column cannot be inverted).

    Example:
        >>> estimable(np.array([0, 1, 1]), 3, 2), estimable(np.array([0, 0, -1]), 3, 2)
        (True, False)
    """
    return (labels is not None and len(labels) == size and bool(((labels >= 0) & (labels < classes)).all())
            and len(np.unique(labels)) == classes)


def class_mix_test(counts: np.ndarray, predicted: np.ndarray, threshold: float, comparison: str) -> Distance:
    """One undecided test (`drift.decide` sets its level) of "no class's share moved by more than `threshold`
    between the baseline's labels and the batch's estimated mix", an L-infinity interval null as the label's:
    per class a z-test of |q - p| <= threshold, Bonferroni over the classes; with its mirror (`p_within`) and
    the batch size that would decide. A batch expected to predict a class fewer than MIN_EXPECTED times is
    not tested (p-value 1), as the G-test pools such buckets: the normal law's tails do not hold there.

    Args:
        counts: the baseline's confusion counts [predicted, true] (its labels' mix is the column sums).
        predicted: the batch's predicted-class counts.
    """
    from scipy import stats

    m = float(predicted.sum())
    base = counts.sum(axis=0) / counts.sum()
    q, per_image, of_confusion = estimate(counts, predicted)
    base_variance = base * (1 - base) / counts.sum()
    se = np.sqrt(np.maximum(per_image / m + of_confusion + base_variance, 1e-12))
    moved = np.abs(q - base)
    z = (moved - threshold) / se
    p_value = float(min(1.0, len(q) * (stats.norm.sf(z) + stats.norm.sf((moved + threshold) / se)).min()))
    if m * counts.sum(axis=1).min() / counts.sum() < MIN_EXPECTED:  # too few for the normal law's tails
        p_value = 1.0
    within = float(stats.norm.sf(((threshold - moved) / se).min()))
    needed = None
    if within > WITHIN_LEVEL:  # per class: threshold / z >= se at the size sought, for DECIDED_SHARE of batches
        bound = threshold / (stats.norm.isf(WITHIN_LEVEL) + stats.norm.isf((1 - DECIDED_SHARE) / (2 * len(q))))
        # a clean batch's: its classes' mix the baseline's, its predicted shares the baseline's predictions'
        seen, conditional, inverse = _conditional(counts)
        clean, confusion_part = variances(inverse, conditional, seen, counts.sum(axis=1) / counts.sum(), base)
        room = bound ** 2 - confusion_part - base_variance
        needed = undecided_at(math.ceil(float(np.max(clean / room))) if (room > 0).all() else None, m)
    return Distance(comparison, "class_mix", "l_infinity", round(float(moved.max()), 6), threshold,
                    "BBSE z-test", round(float(z.max()), 3), 0, p_value, 0.0, False, within, needed)
