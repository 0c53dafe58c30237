"""Drift as a model sees it: predicted classes, confidence, and an MMD test on penultimate-layer embeddings.

Summary features describe pixels; a batch from another dataset can share their distribution and still
mean something else to the model. These tests compare what a trained model makes of the baseline and
of the current batch, and need no labels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from components import label_shift
from components.drift import Distance, bucket_test
from engine.errors import DataError

CONFIDENCE_BUCKETS = 20  # the top probability, in [0, 1]
MIN_CONFIDENCE_EFFECT = 0.0005  # Jensen-Shannon, the summary features' generic minimum effect
MMD_SAMPLE, MMD_PERMUTATIONS = 1000, 500  # images per side, permutations for the null distribution


def load_model(model_dir: str | Path):
    """The Keras model of a pushed version (`<version>/model.keras`) and its embedding model: the input of
    the last layer (the classifier head).

    Raises:
        DataError: the directory holds no pushed model.
    """
    import keras

    path = Path(model_dir) / "model.keras"
    if not path.is_file():
        raise DataError(f"{model_dir}: not a pushed model version (no model.keras); pass <serving dir>/<version>")
    model = keras.models.load_model(path)
    return model, keras.Model(model.inputs, model.layers[-1].input)


def outputs(models, images: np.ndarray, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities [N, C] and embeddings [N, D] of uint8 images [N, 28, 28]."""
    model, embed = models
    flat = images.reshape(len(images), -1)
    return (model.predict(flat, batch_size=batch, verbose=0).astype(np.float64),
            embed.predict(flat, batch_size=batch, verbose=0).astype(np.float64))


def mmd_test(x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
             permutations: int = MMD_PERMUTATIONS) -> tuple[float, float]:
    """Maximum mean discrepancy between two samples of vectors, with a Gaussian kernel whose width is the
    median distance between points; returns the (biased) MMD² and its p-value.

    The null distribution comes from `permutations` random reassignments of the pooled points; its tail
    is taken from a gamma law fitted to their mean and variance (Gretton et al., 2009), so that p-values
    far below 1 / permutations can be told apart. The p-value is never below the permutations' own.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> mmd_test(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)) + 1, rng)[1] < 1e-6
        True
    """
    from scipy import stats

    z = np.concatenate([x, y])
    squared = np.sum(z * z, axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2 * z @ z.T, 0)
    width = np.median(distances[np.triu_indices(len(z), 1)]) or 1.0
    kernel = np.exp(-distances / width)
    weights = np.concatenate([np.full(len(x), 1 / len(x)), np.full(len(y), -1 / len(y))])
    observed = float(weights @ kernel @ weights)
    shuffled = np.stack([rng.permutation(weights) for _ in range(permutations)], axis=1)
    null = np.sum(shuffled * (kernel @ shuffled), axis=0)
    mean, variance = float(null.mean()), float(null.var())
    fitted = float(stats.gamma.sf(observed, mean * mean / variance, scale=variance / mean)) if variance > 0 else 0.0
    counted = (1 + int(np.sum(null >= observed))) / (permutations + 1)
    return observed, max(fitted, counted if counted > 1 / (permutations + 1) else 0.0)


def compare(models, baseline: np.ndarray, current: np.ndarray, class_effect: float, comparison: str,
            seed: int = 0, labels: np.ndarray | None = None) -> list[Distance]:
    """Three undecided tests (`drift.decide` sets their level) of what the model makes of two image sets:
    the classes' mix (with the baseline's `labels`: the current batch's estimated by `label_shift`, else its
    predicted classes; L-infinity shown above `class_effect`), its confidence (JSD on the top probability
    shown above MIN_CONFIDENCE_EFFECT; `drift.interval_test`) and its embeddings (MMD on up to 1,000 images
    of each).
    """
    return compare_outputs(outputs(models, baseline), outputs(models, current), class_effect, comparison, seed,
                           labels)


def compare_outputs(baseline: tuple[np.ndarray, np.ndarray], current: tuple[np.ndarray, np.ndarray],
                    class_effect: float, comparison: str, seed: int = 0,
                    labels: np.ndarray | None = None) -> list[Distance]:
    """`compare` on (probabilities, embeddings) already computed by `outputs`."""
    rng = np.random.default_rng(seed)
    (p_base, e_base), (p_now, e_now) = baseline, current
    classes = p_base.shape[1]
    counts = [np.bincount(p.argmax(axis=1), minlength=classes).astype(np.float64) for p in (p_base, p_now)]
    labelled = label_shift.estimable(labels, len(p_base), classes)
    mix = (label_shift.class_mix_test(label_shift.confusion(p_base.argmax(axis=1), labels, classes), counts[1],
                                      class_effect, comparison) if labelled else
           bucket_test(comparison, "predicted_class", "l_infinity", *counts, class_effect))
    edges = np.linspace(0, 1, CONFIDENCE_BUCKETS + 1)
    confidence = [np.histogram(p.max(axis=1).clip(0, 1), edges)[0].astype(np.float64) for p in (p_base, p_now)]
    x = e_base[rng.permutation(len(e_base))[:MMD_SAMPLE]]
    y = e_now[rng.permutation(len(e_now))[:MMD_SAMPLE]]
    mmd2, p_value = mmd_test(x, y, rng)
    return [mix,
            bucket_test(comparison, "confidence", "jensen_shannon_divergence", *confidence, MIN_CONFIDENCE_EFFECT),
            Distance(comparison, "embedding", "mmd2", round(mmd2, 6), 0.0, "MMD", round(mmd2, 6), 0, p_value,
                     0.0, False)]
