"""Evaluate: test-split metrics per class, thresholds, and comparison with the model serving now: the blessing."""
from __future__ import annotations

from dataclasses import dataclass
import html
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

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
    # A serving model that cannot be read: fail (the run stops, naming it) or ignore (absolute thresholds only).
    baseline_broken: str = param("fail", choices=("fail", "ignore"), flag="--baseline-broken",
                                 help="when the model serving now cannot be read: fail naming it, or ignore it "
                                      "(absolute thresholds only)")


def min_accuracy(cfg, examples: Examples) -> float:
    """The blessing threshold: the config's, else the dataset's known default."""
    if cfg.evaluate.min_accuracy is not None:
        return cfg.evaluate.min_accuracy
    return DEFAULT_MIN_ACCURACY.get(examples.name, FALLBACK_MIN_ACCURACY)
from engine.html import table


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
    kind: ClassVar[str] = "Evaluation"
    run_columns: ClassVar[tuple[tuple[str, str], ...]] = (("accuracy", "accuracy"),)

    @staticmethod
    def described(p: dict) -> str:
        return f"accuracy {p.get('accuracy')}, blessed {p.get('blessed')}"


def test_arrays(examples: Examples, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The test split as uint8 images [N, 784] and integer labels [N]."""
    from components.inputs import split_arrays

    return split_arrays(examples.file_pattern("test"), limit)


def per_class(labels: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...] = tuple("0123456789")
              ) -> tuple[list[dict], list[list[int]]]:
    """Precision, recall, F1 and support per class (with its name), and the confusion matrix (rows: true,
    columns: predicted).

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
        rows.append({"class": k, "name": classes[k], "precision": round(float(precision), 4),
                     "recall": round(float(recall), 4),
                     "f1": round(float(f1), 4), "support": int(actual_k)})
    return rows, matrix.tolist()


def serving_accuracy(saved_model: str, images: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of a pushed SavedModel's `serving_default` on uint8 images [N, 784]."""
    import tensorflow as tf

    serve = tf.saved_model.load(saved_model).signatures["serving_default"]
    predicted = np.concatenate([serve(images=tf.constant(images[i:i + 2048].reshape(-1, 28, 28)))["class_ids"].numpy()
                                for i in range(0, len(images), 2048)])
    return float((predicted == labels).mean())


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
             baseline_broken: str = EvaluateConfig.baseline_broken) -> Evaluation:
    """Scores the model on the test split and decides its blessing.

    Blessed when accuracy >= `min_accuracy`, every class's recall >= `min_class_recall` (when set) and,
    with a `baseline` (the latest blessed model, evaluated here on the same test split), accuracy is at
    most `max_regression` below the baseline's. Each check adds a reason. A baseline that cannot be read
    stops the evaluation naming it, or with `baseline_broken="ignore"` leaves only the absolute thresholds.

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
    baseline_accuracy = None
    # What served when this was decided, a broken version ignored included: push decides again only when
    # another version serves by then.
    considered = baseline.fingerprint if baseline else ""
    if baseline is None:
        checks.append((True, "no baseline: only absolute thresholds apply"))
    else:
        try:
            # Served the source's images, as clients send them: its signature applies its own recorded inversion.
            baseline_accuracy = serving_accuracy(baseline.uri, as_delivered(images, examples.inverted), labels)
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
    return Evaluation(uri=str(out_dir), fingerprint="", accuracy=accuracy, loss=loss, min_accuracy=min_accuracy,
                      blessed=all(ok for ok, _ in checks), reasons=tuple(r for _, r in checks),
                      failed=tuple(r for ok, r in checks if not ok),
                      per_class=tuple(classes), confusion_matrix=tuple(tuple(r) for r in matrix),
                      baseline_version=baseline.version if baseline else None, baseline_accuracy=baseline_accuracy,
                      max_regression=max_regression, baseline_fingerprint=considered, baseline_broken=baseline_broken)


def summarize(ev: Evaluation | None, info: dict) -> dict:
    """The run summary's `evaluation` section: metrics, thresholds, the baseline and the blessing."""
    return {"evaluation": ev and {
        "accuracy": ev.accuracy, "loss": ev.loss, "min_accuracy": ev.min_accuracy, "max_regression": ev.max_regression,
        "blessed": ev.blessed, "reasons": list(ev.reasons), "failed": list(ev.failed),
        "baseline": {"version": ev.baseline_version, "accuracy": ev.baseline_accuracy}
        if ev.baseline_version is not None else None,
        "per_class": list(ev.per_class), "confusion_matrix": [list(row) for row in ev.confusion_matrix]}}


def _params(cfg, out, metadata) -> dict:
    return {"min_accuracy": min_accuracy(cfg, out["ingest"]), "max_regression": cfg.evaluate.max_regression,
            "min_class_recall": cfg.evaluate.min_class_recall, "baseline_broken": cfg.evaluate.baseline_broken}


def _gate(ev: Evaluation, cfg) -> Stop | None:
    return None if ev.blessed else Stop("not_blessed", "model not blessed: " + "; ".join(ev.failed))


# 6: the baseline's fingerprint, for push
def not_evaluated(summary: dict) -> str:
    """What the evaluation's and the blessing's sections say when the run stopped before evaluating."""
    return f"<p>Not evaluated (run {html.escape(summary['status'])}).</p>"


def _confusion(matrix: list[list[int]], names: list[str]) -> str:
    if not matrix:
        return "<p>Not evaluated.</p>"
    top = max(max(row) for row in matrix) or 1
    names = [html.escape(n) for n in names]
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{n}</th>" for n in names) + "</tr>"
    rows = "".join(f"<tr><th>{names[k]}</th>" + "".join(
        f"<td style='background:rgba(59,111,182,{0.85 * n / top:.2f})'>{n}</td>" for n in row) + "</tr>"
        for k, row in enumerate(matrix))
    return f"<table class='confusion'>{head}{rows}</table>"


def report_section(summary: dict, outputs) -> tuple[str, str, str]:
    """The run report's section: test accuracy and loss, the confusion matrix and per-class precision, recall
    and F1."""
    ev = summary.get("evaluation")
    if not ev:
        return "evaluation", "Evaluation", not_evaluated(summary)
    names = [r.get("name", str(r["class"])) for r in ev["per_class"]]  # runs before class names had none
    class_rows = [[str(r["class"]), html.escape(name), f"{r['precision']:.3f}", f"{r['recall']:.3f}",
                   f"{r['f1']:.3f}", str(r["support"])] for r, name in zip(ev["per_class"], names)]
    per_class = table(["class", "name", "precision", "recall", "f1", "support"], class_rows, "")
    return "evaluation", "Evaluation", (f"<p>Test accuracy {ev['accuracy']:.4f}, loss {ev['loss']:.4f}.</p>"
                                        f"{_confusion(ev['confusion_matrix'], names)}{per_class}")


COMPONENT = Component(name="evaluate", fn=evaluate, inputs=(Model, Examples, (PushedModel, type(None))),
                      output=Evaluation, version="6", settings=EvaluateConfig, params=_params, gate=_gate,
                      summary=summarize, report=report_section,
                      headline=lambda s: f", test accuracy {s['evaluation']['accuracy']:.4f}" if s["evaluation"] else "")
