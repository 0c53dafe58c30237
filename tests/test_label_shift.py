"""Tests of label shift without labels: the classes' mix estimated through the model's confusion."""
import dataclasses

import numpy as np
import pytest

from components import drift, label_shift

CLASSES, ACCURACY = 10, 0.8


def _model(rng):
    """Predictions of a model right ACCURACY of the time, its mistakes spread over the other classes."""
    confusion = np.full((CLASSES, CLASSES), (1 - ACCURACY) / (CLASSES - 1))
    np.fill_diagonal(confusion, ACCURACY)
    cumulative = np.cumsum(confusion, axis=0).T  # per true class, the predicted classes' cumulative chances
    return lambda labels: (rng.random(len(labels))[:, None] < cumulative[labels]).argmax(axis=1)


def _batch(rng, predict, size, shares):
    return np.bincount(predict(rng.choice(CLASSES, size, p=shares)), minlength=CLASSES).astype(np.float64)


@pytest.fixture
def baseline(request):
    """A generator of the test's own (its draws do not depend on which tests ran before), a model, and that
    model's confusion on 10,000 labelled baseline images."""
    rng = np.random.default_rng(sum(map(ord, request.node.name)))
    predict = _model(rng)
    labels = rng.integers(0, CLASSES, 10_000)
    return rng, predict, label_shift.confusion(predict(labels), labels, CLASSES)


def _moved(base: np.ndarray, by: float) -> np.ndarray:
    """`base` with class 0's share lowered by `by`, the others' raised alike: an L-infinity effect of `by`."""
    return base + np.r_[-by, [by / (CLASSES - 1)] * (CLASSES - 1)]


def _half(share_kept=0.5):
    shares = np.full(CLASSES, 1.0)
    shares[0] = share_kept
    return shares / shares.sum()


def test_the_mix_is_estimated_through_the_confusion_not_read_off_the_predictions(baseline):
    rng, predict, counts = baseline
    predicted = _batch(rng, predict, 50_000, _half())
    q = label_shift.estimate(counts, predicted)[0]
    assert q[0] == pytest.approx(_half()[0], abs=0.006)  # the model's mistakes undone
    assert predicted[0] / predicted.sum() > _half()[0] + 0.007  # the predicted share alone is pulled to the mean


def test_the_interval_null_holds_at_the_minimum_and_a_class_at_half_its_share_is_found(baseline):
    rng, predict, counts = baseline
    base = counts.sum(axis=0) / counts.sum()
    at_minimum = _moved(base, 0.03)
    alarms = [label_shift.class_mix_test(counts, _batch(rng, predict, 10_000, at_minimum), 0.03, "m").p_value <= 0.05
              for _ in range(150)]
    assert np.mean(alarms) <= 0.08
    clean = [label_shift.class_mix_test(counts, _batch(rng, predict, 10_000, base), 0.012, "m").p_value
             for _ in range(100)]
    assert min(clean) > 1e-4
    found = [label_shift.class_mix_test(counts, _batch(rng, predict, 10_000, _half()), 0.012, "m")
             for _ in range(20)]
    assert all(d.p_value < 1e-6 for d in found)
    # The effect is in the label's units, as its minimum is: the predicted classes' own change is diluted by
    # the model's mistakes, so a minimum set on labels would let it understate a shift.
    shift = float(np.max(np.abs(_half() - base)))
    estimated = np.mean([d.distance for d in found])
    predicted = np.mean([drift.l_infinity(counts.sum(axis=1), _batch(rng, predict, 10_000, _half()))
                         for _ in range(20)])
    assert estimated == pytest.approx(shift, abs=0.004) and predicted < shift - 0.008

def test_a_verdict_on_too_few_images_names_the_size_that_would_decide(baseline):
    rng, predict, counts = baseline
    small = drift.decide([label_shift.class_mix_test(counts, _batch(rng, predict, 50, _half(1.0)), 0.1, "m")],
                         0.001)[0]
    assert small.verdict == "insufficient data" and small.needed > 50
    decided = [label_shift.class_mix_test(counts, _batch(rng, predict, small.needed, _half(1.0)), 0.1, "m")
               for _ in range(50)]
    assert np.mean([d.p_within <= drift.WITHIN_LEVEL for d in decided]) >= 0.8
    # A minimum the baseline's own 10,000 labels cannot resolve: no batch size decides.
    assert label_shift.class_mix_test(counts, _batch(rng, predict, 500, _half(1.0)), 0.005, "m").needed is None


def test_a_baseline_that_misses_a_class_cannot_give_a_confusion_to_invert():
    assert not label_shift.estimable(np.array([0, 1, 1]), 3, 3)  # class 2 never seen
    assert not label_shift.estimable(np.array([0, 1, 5]), 3, 3)  # a label the model has no class for
    assert not label_shift.estimable(np.array([0, 1, -1]), 3, 3)  # an image without a label
    assert not label_shift.estimable(np.array([0, 1, 2]), 4, 3) and label_shift.estimable(np.array([0, 1, 2]), 3, 3)


def test_a_batch_large_enough_for_clean_data_but_undecided_has_its_effect_near_the_minimum(baseline):
    rng, predict, counts = baseline
    near = _moved(counts.sum(axis=0) / counts.sum(), 0.1)
    found = drift.decide([label_shift.class_mix_test(counts, _batch(rng, predict, 3000, near), 0.1, "m")], 0.001)[0]
    assert found.verdict == "near the minimum" and found.needed == 0, found
    assert drift.verdict_text(dataclasses.asdict(found)) == "undecided: the effect is near the minimum"


@pytest.mark.parametrize("size", [10, 25, 50])
def test_tiny_clean_batches_do_not_alarm_when_a_class_is_absent_by_chance(baseline, size):
    """A class a tiny batch happens not to predict is no evidence: the variance is the null's, not the
    batch's own zero."""
    rng, predict, counts = baseline
    base = counts.sum(axis=0) / counts.sum()
    p_values = [label_shift.class_mix_test(counts, _batch(rng, predict, size, base), 0.012, "m").p_value
                for _ in range(200)]
    assert sum(p <= 0.001 for p in p_values) <= 1
