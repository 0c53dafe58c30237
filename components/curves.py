"""Learning curves: one power law fitted to all trials' validation accuracy per epoch, predicting what training buys."""
from __future__ import annotations

import math
from dataclasses import dataclass

# The power law's exponent when too few points fit it: on Fashion-MNIST (benchmarks/budget.py, 15m) the chosen
# trial's two epochs on a quarter of the data, with exponent 1, predicted 0.9245 after its 117 epochs of final
# training, which measured 0.9238; 0.5 predicted 0.978.
PRIOR_EXPONENT = 1.0
# A plateau is judged with a heavier tail than the prediction's: a budget is cut short only when even that
# optimistic extrapolation sees no gain left.
TAIL_EXPONENT = 0.5
EXPONENTS = tuple(x / 20 for x in range(4, 31))  # 0.2 to 1.5: the exponents tried with enough points
PLATEAU_GAIN = 0.002  # accuracy that more training must still add, or the curve has reached its plateau


@dataclass(frozen=True)
class Curves:
    """accuracy_i(passes) = ceilings[i] - scale * passes ** -exponent, `passes` over the whole train split.

    The trials share the shape (scale and exponent) and differ in their ceilings: two or three epochs of one
    trial cannot fit a curve of its own (a slow start would extrapolate to a high ceiling), but all trials'
    epochs together fit the shape.
    """

    ceilings: dict[str, float]
    scale: float
    exponent: float

    def at(self, trial: str, passes: float) -> float:
        """Trial `trial`'s predicted accuracy after `passes` over the train split.

        Example:
            >>> round(Curves({"0": 0.95}, 0.05, 0.5).at("0", 4.0), 3)
            0.925
        """
        return self.ceilings[trial] - self.scale * max(passes, 1e-6) ** -self.exponent

    def plateau(self, gain: float = PLATEAU_GAIN) -> float:
        """Passes after which more training adds less than `gain` accuracy, however long it goes on.

        Example:
            >>> Curves({}, 0.02, 0.5).plateau(0.002)
            100.0
        """
        if self.scale <= gain:
            return 0.0
        return (self.scale / gain) ** (1.0 / self.exponent)


def _least_squares(points: dict[str, list[tuple[float, float]]], exponent: float) -> tuple[Curves, float]:
    """The ceilings and shared scale fitting `points` for one exponent (the median of the trials' own slopes),
    and the mean squared error. A falling shape (overfitting, or noise) is flat: the scale is never negative."""
    us = {t: [p ** -exponent for p, _ in ps] for t, ps in points.items()}
    slopes = []
    for t, ps in points.items():
        centred = [(u - sum(us[t]) / len(ps), y - sum(y for _, y in ps) / len(ps)) for u, (_, y) in zip(us[t], ps)]
        spread = sum(u * u for u, _ in centred)
        if spread > 0:
            slopes.append(-sum(u * y for u, y in centred) / spread)
    # The median trial's slope: a trial that diverged or was still warming up moves it no more than any other.
    scale = max(0.0, sorted(slopes)[len(slopes) // 2]) if slopes else 0.0
    ceilings = {t: min(1.0, sum(y for _, y in ps) / len(ps) + scale * sum(us[t]) / len(ps)) for t, ps in points.items()}
    curves = Curves(ceilings, scale, exponent)
    error = sum((curves.at(t, p) - y) ** 2 for t, ps in points.items() for p, y in ps)
    return curves, error / max(1, sum(len(ps) for ps in points.values()))


def fit(points: dict[str, list[tuple[float, float]]], exponent: float | None = None) -> Curves | None:
    """The power laws through each trial's `points` (passes over the train split, validation accuracy),
    sharing one shape; None without any point.

    With `exponent`, that one is fitted; else, unless some trial has points at three or more passes (when any
    exponent fits alike and the prior's is taken), the one that fits best. A ceiling never exceeds 1.

    Example:
        >>> curves = fit({"a": [(0.25, 0.80), (0.5, 0.85)], "b": [(0.25, 0.70), (0.5, 0.75)]})
        >>> round(curves.at("a", 0.5), 3), curves.at("a", 10.0) > curves.at("b", 10.0) > 0.75
        (0.85, True)
    """
    points = {t: sorted((float(p), float(y)) for p, y in ps if p > 0 and y is not None and math.isfinite(y))
              for t, ps in points.items()}
    points = {t: ps for t, ps in points.items() if ps}
    if not points:
        return None
    if exponent is not None:
        return _least_squares(points, exponent)[0]
    if max(len({p for p, _ in ps}) for ps in points.values()) < 3:  # two passes a trial: any exponent fits
        return _least_squares(points, PRIOR_EXPONENT)[0]
    fits = [(_least_squares(points, e), e) for e in EXPONENTS]
    return min(fits, key=lambda f: (round(f[0][1], 12), abs(f[1] - PRIOR_EXPONENT)))[0][0]
