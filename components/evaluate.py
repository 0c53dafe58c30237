"""Evaluate: test-split metrics per class, thresholds, and comparison with the model serving now: the blessing."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from components import calibration, evaluate_report, slices
from components.image_features import as_delivered
from components.ingest import Examples
from components.train import Model
from components.versions import PushedModel
from engine.artifacts import Artifact
from engine.component import Component
from engine.dag import Stop
from engine.errors import PipelineError, first_line
from engine.settings import param

# The product's own thresholds for datasets whose accuracy users know (MNIST: the user's claim).
DEFAULT_MIN_ACCURACY = {"mnist": 0.97, "fashion_mnist": 0.88, "kmnist": 0.90}
FALLBACK_MIN_ACCURACY = 0.88


@dataclass(frozen=True)
class EvaluateConfig:
    """Blessing thresholds: absolute, and the change against the latest blessed model."""

    min_accuracy: float | None = param(  # None: the dataset's default (DEFAULT_MIN_ACCURACY)
        None, low=0, high=1, flag="--min-accuracy", help="test accuracy needed to bless the model",
        default_help=", ".join(f"{k} {v}" for k, v in DEFAULT_MIN_ACCURACY.items()) + f", others {FALLBACK_MIN_ACCURACY}")
    min_class_recall: float | None = param(None, low=0, high=1)  # every class's recall at least this, when set
    max_regression: float = param(0.005, low=0, high=1, flag="--max-regression",
                                  help="largest accuracy drop allowed against the model serving now")
    # Slices: each class and each quarter of the summary features (components/slices.py), gated only where
    # shown beyond the threshold by bounds that hold over all slices at once.
    min_slice_size: int = param(200, low=1, flag="--min-slice-size",
                                help="fewest test images a slice needs to be measured and gated")
    min_slice_accuracy: float | None = param(None, low=0, high=1, flag="--min-slice-accuracy",
                                             help="accuracy every slice needs (shown below it: not blessed)")
    # The slicing spec: the summary features whose quarters are slices (each class always is one); [] for none.
    slice_features: tuple[str, ...] = param(slices.SLICED, valid=slices.known)
    max_slice_regression: float | None = param(
        0.03, low=0, high=1, flag="--max-slice-regression",
        help="largest accuracy drop of any slice against the model serving now (shown beyond it: not blessed)")
    # A serving model that cannot be read: fail (the run stops, naming it) or ignore (absolute thresholds only).
    baseline_broken: str = param("fail", choices=("fail", "ignore"), flag="--baseline-broken",
                                 help="when the model serving now cannot be read: fail naming it, or ignore it "
                                      "(absolute thresholds only)")


def min_accuracy(cfg, examples: Examples) -> float:
    """The blessing threshold: the config's, else the dataset's known default."""
    if cfg.evaluate.min_accuracy is not None:
        return cfg.evaluate.min_accuracy
    return DEFAULT_MIN_ACCURACY.get(examples.name, FALLBACK_MIN_ACCURACY)


@dataclass(frozen=True)
class Evaluation(Artifact):
    """Test-split metrics and the blessing decision with its reasons (one per check)."""

    accuracy: float
    loss: float
    min_accuracy: float
    blessed: bool
    reasons: tuple[str, ...]
    failed: tuple[str, ...] = ()  # the reasons of the checks that failed: why it is not blessed
    per_class: tuple[dict[str, Any], ...] = ()  # class, precision, recall, f1, support
    confusion_matrix: tuple[tuple[int, ...], ...] = ()  # rows: true class, columns: predicted
    baseline_version: int | None = None  # the serving version compared with, if any
    baseline_accuracy: float | None = None
    max_regression: float | None = None
    # The serving version's fingerprint the regression gate was decided against ("" with no baseline): push
    # re-decides it when another version serves by then.
    baseline_fingerprint: str | None = None
    # What a baseline that cannot be read does: "fail" the run, or is "ignore"d.
    baseline_broken: str = EvaluateConfig.baseline_broken
    # Each slice's metrics (components/slices.py), with indices of test images it got wrong.
    slices: tuple[dict[str, Any], ...] = ()
    calibration: dict[str, Any] | None = None  # expected calibration error, reliability bins, confidence histograms
    # The slice gates' settings (min_size, min_accuracy, max_regression): push decides them again, with the
    # test predictions saved beside the record (PREDICTIONS), when another version serves by then.
    slice_gates: dict[str, Any] | None = None
    kind: ClassVar[str] = "Evaluation"
    run_columns: ClassVar[tuple[tuple[str, str], ...]] = (("accuracy", "accuracy"),)

    @staticmethod
    def described(p: dict) -> str:
        return f"accuracy {p.get('accuracy')}, blessed {p.get('blessed')}"


# Beside the record: the class predicted for each test image and its label, in the test split's order, and
# each measured slice's images (bits packed, one row per slice in `slices` order): push's recheck and
# `runs compare` pair two models on them.
PREDICTIONS = "predictions.npz"


def test_arrays(examples: Examples, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The test split as uint8 images [N, 784] and integer labels [N]."""
    from components.inputs import split_arrays

    return split_arrays(examples.file_pattern("test"), limit)


def per_class(labels: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...] = tuple("0123456789")
              ) -> tuple[list[dict], list[list[int]]]:
    """Precision and recall (each with its 95% Wilson interval), F1 and support per class (with its name), and the
    confusion matrix (rows: true, columns: predicted).

    Example:
        >>> rows, matrix = per_class(np.array([0, 1, 1]), np.array([0, 1, 0]), ("cat", "dog"))
        >>> rows[1]["name"], rows[1]["recall"], matrix[1]
        ('dog', 0.5, [1, 1])
    """
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    rows = []
    for k in range(len(classes)):
        tp, predicted_k, actual_k = matrix[k, k], matrix[:, k].sum(), matrix[k, :].sum()
        precision = tp / predicted_k if predicted_k else 0.0
        recall = tp / actual_k if actual_k else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        (precision_low, precision_high), (recall_low, recall_high) = (slices.wilson(int(tp), int(predicted_k)),
                                                                      slices.wilson(int(tp), int(actual_k)))
        rows.append({"class": k, "name": classes[k], "precision": round(float(precision), 4),
                     "precision_low": round(precision_low, 4), "precision_high": round(precision_high, 4),
                     "recall": round(float(recall), 4), "recall_low": round(recall_low, 4),
                     "recall_high": round(recall_high, 4), "f1": round(float(f1), 4), "support": int(actual_k)})
    return rows, matrix.tolist()


def serving_predictions(saved_model: str, images: np.ndarray) -> np.ndarray:
    """The classes a pushed SavedModel's `serving_default` predicts for uint8 images [N, 784]."""
    import tensorflow as tf

    serve = tf.saved_model.load(saved_model).signatures["serving_default"]
    return np.concatenate([serve(images=tf.constant(images[i:i + 2048].reshape(-1, 28, 28)))["class_ids"].numpy()
                           for i in range(0, len(images), 2048)])


def serving_accuracy(saved_model: str, images: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of a pushed SavedModel's `serving_default` on uint8 images [N, 784]."""
    return float((serving_predictions(saved_model, images) == labels).mean())


def regression(accuracy: float, theirs: float, against: str, max_regression: float) -> tuple[bool, str]:
    """The regression gate: whether `accuracy` is at most `max_regression` below the serving model's
    (`theirs`, named `against`), and the reason saying so.

    Example:
        >>> regression(0.90, 0.91, "baseline version 2", 0.005)
        (False, 'accuracy 0.9000 vs baseline version 2 0.9100: change -0.0100 beyond max_regression 0.0050')
    """
    change = accuracy - theirs
    ok = change >= -max_regression
    return ok, (f"accuracy {accuracy:.4f} vs {against} {theirs:.4f}: change {change:+.4f} "
                f"{'within' if ok else 'beyond'} max_regression {max_regression:.4f}")


def evaluate(model: Model, examples: Examples, baseline: PushedModel | None, *, out_dir: Path, min_accuracy: float,
             max_regression: float = EvaluateConfig.max_regression, min_class_recall: float | None = None,
             baseline_broken: str = EvaluateConfig.baseline_broken,
             min_slice_size: int = EvaluateConfig.min_slice_size, min_slice_accuracy: float | None = None,
             max_slice_regression: float | None = EvaluateConfig.max_slice_regression,
             slice_features: tuple[str, ...] = slices.SLICED) -> Evaluation:
    """Scores the model on the test split and decides its blessing.

    Blessed when accuracy >= `min_accuracy`, every class's recall >= `min_class_recall` (when set) and,
    with a `baseline` (the latest blessed model, evaluated here on the same test split), accuracy is at
    most `max_regression` below the baseline's; and no slice of at least `min_slice_size` images (each class,
    each quarter of the `slice_features`) is shown below `min_slice_accuracy` or worse than the baseline's by
    more than `max_slice_regression` (`slices.gate`). Each check adds a reason. A baseline that cannot be
    read stops the evaluation naming it, or with `baseline_broken="ignore"` leaves only the absolute thresholds.
    The test predictions and the slices' images are saved beside the record (`PREDICTIONS`).

    Raises:
        PipelineError: the baseline cannot be read and `baseline_broken` is "fail".
    """
    import keras

    images, labels = test_arrays(examples)
    trained = keras.models.load_model(model.path)
    probabilities = trained.predict(images, batch_size=1024, verbose=0)
    predicted = probabilities.argmax(axis=1)
    accuracy = float((predicted == labels).mean())
    eps = 1e-7
    loss = float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], eps, 1.0)).mean())
    classes, matrix = per_class(labels, predicted, model.classes)
    checks = [(accuracy >= min_accuracy, f"accuracy {accuracy:.4f} {'>=' if accuracy >= min_accuracy else '<'} "
                                         f"min_accuracy {min_accuracy:.4f}")]
    if min_class_recall is not None:
        weak = [c for c in classes if c["recall"] < min_class_recall]
        checks.append((not weak, f"recall below min_class_recall {min_class_recall:.4f} for class "
                                 + ", ".join(f"{c['name']} ({c['recall']:.4f})" for c in weak) if weak else
                       f"every class's recall >= min_class_recall {min_class_recall:.4f}"))
    baseline_accuracy, theirs = None, None
    # What served when this was decided, a broken version ignored included: push decides again only when
    # another version serves by then.
    considered = baseline.fingerprint if baseline else ""
    if baseline is None:
        checks.append((True, "no baseline: only absolute thresholds apply"))
    else:
        try:
            # Served the source's images, as clients send them: its signature applies its own recorded inversion.
            theirs = serving_predictions(baseline.uri, as_delivered(images, examples.inverted)) == labels
            baseline_accuracy = float(theirs.mean())
        except Exception as exc:  # any way a SavedModel can be broken: parse, missing variables, signature
            why = f"{type(exc).__name__}: {first_line(exc, 200)}"
            if baseline_broken != "ignore":
                raise PipelineError(f"{baseline.uri}: the model serving now (version {baseline.version}) cannot "
                                    f"be read as the regression baseline ({why}); repair or remove that version, "
                                    "or pass --baseline-broken ignore to evaluate without it") from None
            checks.append((True, f"baseline version {baseline.version} ({baseline.uri}) cannot be read ({why}): "
                                 "ignored (baseline_broken ignore); only absolute thresholds apply"))
            baseline = None
    if baseline is not None:
        checks.append(regression(accuracy, baseline_accuracy, f"baseline version {baseline.version}", max_regression))
    right = predicted == labels
    found, masks = slices.define(images.reshape(len(images), 28, 28), labels, model.classes, min_slice_size,
                                 slice_features)
    measured = slices.measure(found, masks, right, theirs)
    checks += slices.gate(measured, masks, right, theirs, min_slice_accuracy, max_slice_regression,
                          f"baseline version {baseline.version}" if baseline else "")
    np.savez(out_dir / PREDICTIONS, predicted=predicted.astype(np.int16), labels=labels.astype(np.int16),
             masks=np.packbits(np.array(masks, bool).reshape(len(masks), len(labels)), axis=1),
             data=np.array(examples.fingerprint))  # pairs two evaluations only on the same test images
    return Evaluation(uri=str(out_dir), fingerprint="", accuracy=accuracy, loss=loss, min_accuracy=min_accuracy,
                      blessed=all(ok for ok, _ in checks), reasons=tuple(r for _, r in checks),
                      failed=tuple(r for ok, r in checks if not ok),
                      per_class=tuple(classes), confusion_matrix=tuple(tuple(r) for r in matrix),
                      baseline_version=baseline.version if baseline else None, baseline_accuracy=baseline_accuracy,
                      max_regression=max_regression, baseline_fingerprint=considered, baseline_broken=baseline_broken,
                      slices=tuple(measured), calibration=calibration.calibration(probabilities, labels),
                      slice_gates={"min_size": min_slice_size, "min_accuracy": min_slice_accuracy,
                                   "max_regression": max_slice_regression})


def summarize(ev: Evaluation | None, info: dict) -> dict:
    """The run summary's `evaluation` section: metrics, thresholds, the baseline and the blessing."""
    return {"evaluation": ev and {
        "accuracy": ev.accuracy, "loss": ev.loss, "min_accuracy": ev.min_accuracy, "max_regression": ev.max_regression,
        "blessed": ev.blessed, "reasons": list(ev.reasons), "failed": list(ev.failed),
        "baseline": {"version": ev.baseline_version, "accuracy": ev.baseline_accuracy}
        if ev.baseline_version is not None else None,
        "per_class": list(ev.per_class), "confusion_matrix": [list(row) for row in ev.confusion_matrix],
        "slices": list(ev.slices), "calibration": ev.calibration}}


def _params(cfg, out, metadata) -> dict:
    return {"min_accuracy": min_accuracy(cfg, out["ingest"]), "max_regression": cfg.evaluate.max_regression,
            "min_class_recall": cfg.evaluate.min_class_recall, "baseline_broken": cfg.evaluate.baseline_broken,
            "min_slice_size": cfg.evaluate.min_slice_size, "min_slice_accuracy": cfg.evaluate.min_slice_accuracy,
            "max_slice_regression": cfg.evaluate.max_slice_regression, "slice_features": cfg.evaluate.slice_features}


def _gate(ev: Evaluation, cfg) -> Stop | None:
    return None if ev.blessed else Stop("not_blessed", "model not blessed: " + "; ".join(ev.failed))


# 6: the baseline's fingerprint, for push. 7: slices and calibration.
COMPONENT = Component(name="evaluate", fn=evaluate, inputs=(Model, Examples, (PushedModel, type(None))),
                      output=Evaluation, version="7", settings=EvaluateConfig, params=_params, gate=_gate,
                      summary=summarize, report=evaluate_report.report_section,
                      headline=lambda s: f", test accuracy {s['evaluation']['accuracy']:.4f}" if s["evaluation"] else "")
