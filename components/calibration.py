"""Calibration: how far a model's confidence is from its accuracy (expected calibration error, the reliability
diagram) and how confident it is when right and when wrong."""
from __future__ import annotations

import numpy as np

BINS = 15  # equal-width confidence bins, as in Guo et al. 2017 (the usual ECE)
HISTOGRAM_BINS = 20


def calibration(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> dict:
    """The expected calibration error (the bins' |accuracy - confidence| weighted by their share of images,
    on the top class's probability), the reliability diagram's bins, and histograms of the top confidence of
    right and of wrong predictions.

    Example:
        >>> p = np.array([[0.9, 0.1], [0.65, 0.35], [0.8, 0.2], [0.3, 0.7]])
        >>> found = calibration(p, np.array([0, 1, 0, 1]), bins=5)
        >>> found["ece"], [b["n"] for b in found["bins"]]
        (0.1625, [0, 0, 0, 2, 2])
    """
    confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    right = predicted == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.minimum((confidence * bins).astype(int), bins - 1)  # [k/bins, (k+1)/bins), 1.0 in the last
    rows, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        accuracy = float(right[inside].mean()) if n else None
        mean_confidence = float(confidence[inside].mean()) if n else None
        if n:
            ece += n / len(labels) * abs(accuracy - mean_confidence)
        rows.append({"low": round(float(edges[b]), 4), "high": round(float(edges[b + 1]), 4), "n": n,
                     "accuracy": None if accuracy is None else round(accuracy, 4),
                     "confidence": None if mean_confidence is None else round(mean_confidence, 4)})
    histogram = np.linspace(0, 1, HISTOGRAM_BINS + 1)
    return {"ece": round(float(ece), 4), "bins": rows,
            "right": np.histogram(confidence[right], histogram)[0].tolist(),
            "wrong": np.histogram(confidence[~right], histogram)[0].tolist()}


def reliability_svg(found: dict, size: int = 240) -> str:
    """The reliability diagram as inline SVG: each bin's accuracy against its confidence, the diagonal being
    perfect calibration; bar width by the bin's range, opacity by its share of images."""
    pad, plot = 30, size - 40
    total = sum(b["n"] for b in found["bins"]) or 1

    def x(v):
        return pad + v * plot

    def y(v):
        return 10 + (1 - v) * plot

    bars = "".join(
        f"<rect x='{x(b['low']):.1f}' y='{y(b['accuracy']):.1f}' width='{(b['high'] - b['low']) * plot:.1f}' "
        f"height='{b['accuracy'] * plot:.1f}' fill='rgba(59,111,182,{0.25 + 0.75 * min(1, 5 * b['n'] / total):.2f})'>"
        f"<title>confidence {b['low']:.2f}-{b['high']:.2f}: {b['n']} images, accuracy {b['accuracy']:.3f}, mean "
        f"confidence {b['confidence']:.3f}</title></rect>" for b in found["bins"] if b["n"])
    return (f"<svg class='reliability' width='{size}' height='{size}' role='img' aria-label='reliability diagram'>"
            f"<rect x='{pad}' y='10' width='{plot}' height='{plot}' fill='none' stroke='#999'/>{bars}"
            f"<line x1='{x(0)}' y1='{y(0)}' x2='{x(1)}' y2='{y(1)}' stroke='#c33' stroke-dasharray='4 3'/>"
            f"<text x='{pad}' y='{size - 8}' font-size='10'>confidence 0 to 1</text>"
            f"<text x='2' y='20' font-size='10'>acc.</text></svg>")
