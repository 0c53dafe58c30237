"""Validate: TFDV anomalies of every split, skew of test against train, drift against the previous span."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from components import image_features
from components.drift import LABEL, Distance, compare, decide, fixed_histogram
from components.drift_report import TESTS_EXPLAINED, anomalies_table, histograms, tests_table
from components.libs import load_tfdv
from components.schema import Schema
from components.ingest import COMPONENT as INGEST
from components.statistics import COMPONENT as STATISTICS, Statistics
from engine import history
from engine.artifacts import Artifact
from engine.component import Component
from engine.dag import Stop
from engine.errors import ValidationFailed
from engine.settings import param

FPR_HELP = "the chance that a check of clean data alarms (skew, drift), shared by all its tests"
from engine.html import key, unavailable


@dataclass(frozen=True)
class Anomaly:
    """One data problem: which split and feature, its TFDV type and a readable description."""

    split: str
    feature: str
    type: str
    description: str


@dataclass(frozen=True)
class Anomalies(Artifact):
    """Anomalies of every split against the schema, and drift and skew distances; clean when none."""

    anomalies: tuple[Anomaly, ...]
    distances: tuple[Distance, ...] = ()
    kind: ClassVar[str] = "Anomalies"


def anomalies_of(stats, proto_schema, split: str, environment: str = "TRAINING") -> tuple[list[Anomaly], object]:
    """Schema anomalies of one split's DatasetFeatureStatisticsList in the schema's `environment` (SERVING
    expects no label); an empty split is one too."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    if stats.datasets[0].num_examples == 0:
        return [Anomaly(split, "*", "EMPTY_SPLIT", f"split '{split}' has no examples")], None
    result = load_tfdv().validate_statistics(stats, proto_schema, environment=environment)
    found = []
    for feature, info in sorted(result.anomaly_info.items()):
        kinds = ",".join(anomalies_pb2.AnomalyInfo.Type.Name(r.type) for r in info.reason)
        description = info.description
        if feature == "background" and "BIG" in kinds:  # TFDV says a value is high; the user needs why and what to do
            description = f"{description.replace('(upto six significant digits)', '').rstrip('.')}: " \
                          f"{image_features.INVERTED_HINT}"
        found.append(Anomaly(split, feature, kinds, description))
    return found, result


def why(d: Distance) -> str:
    """Why a test drifted (or not), in one line: the test, its statistic, p-value and level, the effect."""
    return (f"{d.comparison}: {d.test} {d.statistic:.1f}" + (f" ({d.dof} dof)" if d.dof else "")
            + f", p {d.p_value:.1e} {'<=' if d.p_value <= d.alpha else '>'} alpha {d.alpha:.1e}; {d.measure} "
            f"{d.distance:.4f} {'>=' if d.distance >= d.threshold else '<'} minimum effect {d.threshold:.4f}")


def breaches(distances: list[Distance], split: str) -> list[Anomaly]:
    """Drifted tests, as anomalies naming the feature, the test, its p-value and the effect size."""
    return [Anomaly(split, d.feature, d.comparison.split(":")[0].upper(), why(d)) for d in distances if d.drifted]


def test_examples_needed(min_accuracy: float) -> int:
    """The fewest test examples that can tell a model at `min_accuracy` from a perfect one: the threshold's
    distance to 1 is at least two standard errors of an accuracy there, 1 - t >= 2 sqrt(t (1 - t) / n),
    so n >= 4 t / (1 - t): 30 for 0.88, 130 for 0.97, 1 for 0. A threshold of 1 needs none more.

    Example:
        >>> test_examples_needed(0.97)
        130
    """
    return 1 if min_accuracy >= 1 else max(1, math.ceil(4 * min_accuracy / (1 - min_accuracy) - 1e-9))


# Fewer training examples of a class than this and a model cannot learn it: a few shots are memorised, and
# one of them may be carved into the eval split.
MIN_CLASS_EXAMPLES = 5
PASSED_VALIDATION = ("pushed", "not_blessed")  # the statuses of a run whose data passed validation


def coverage(per_split: dict, classes: tuple[str, ...], min_accuracy: float | None) -> list[Anomaly]:
    """What keeps labelled data from making a model worth trusting: fewer than two classes (a classifier of
    one class is right by construction), a class without examples in train (a model cannot learn it) or
    with fewer than `MIN_CLASS_EXAMPLES` there, a class without examples in test (its recall cannot be
    measured), and a test split too small to measure accuracy against `min_accuracy`
    (`test_examples_needed`).

    Example:
        >>> from tensorflow_metadata.proto.v0.statistics_pb2 import DatasetFeatureStatisticsList
        >>> empty = DatasetFeatureStatisticsList(datasets=[{"num_examples": 0}])
        >>> [a.type for a in coverage({"train": empty, "test": empty}, ("shoe",), 0.9)]
        ['TOO_FEW_CLASSES']
    """
    found = []
    if len(classes) < 2:
        found.append(Anomaly("train", LABEL, "TOO_FEW_CLASSES", f"the data has {len(classes)} class"
                             f"{'' if len(classes) == 1 else 'es'} ({', '.join(classes) or 'none'}); a classifier "
                             "needs at least 2 (for a folder: dataset, one sub-folder per class)"))
    for split in ("train", "test"):
        stats = per_split[split].datasets[0]
        counts = fixed_histogram(stats, LABEL)
        if stats.num_examples == 0 or counts is None or not counts.sum():
            continue  # empty (flagged already) or without labels (flagged as a missing label)
        missing = [f"{i} ({name})" for i, name in enumerate(classes) if i >= len(counts) or counts[i] == 0]
        if missing:
            found.append(Anomaly(split, LABEL, "MISSING_CLASSES", f"{len(missing)} of the schema's {len(classes)} "
                                 f"classes have no examples in split '{split}': {', '.join(missing[:10])}"
                                 + (" ..." if len(missing) > 10 else "")))
        scarce = [f"{name} ({int(counts[i])})" for i, name in enumerate(classes)
                  if i < len(counts) and 0 < counts[i] < MIN_CLASS_EXAMPLES]
        if split == "train" and scarce:
            found.append(Anomaly(split, LABEL, "CLASS_TOO_SMALL", f"{len(scarce)} classes have fewer than "
                                 f"{MIN_CLASS_EXAMPLES} training examples to learn from: {', '.join(scarce[:10])}"
                                 + (" ..." if len(scarce) > 10 else "") + "; add examples or drop the class"))
    tested = per_split["test"].datasets[0].num_examples
    needed = test_examples_needed(min_accuracy) if min_accuracy is not None else 0
    if 0 < tested < needed:
        found.append(Anomaly("test", "*", "TEST_SPLIT_TOO_SMALL", f"{tested} examples; at least "
                             f"{needed} are needed to measure accuracy against "
                             f"min_accuracy {min_accuracy:g} (two standard errors from a perfect score)"))
    return found


@dataclass(frozen=True)
class ValidateConfig:
    """Data validation gates; schema anomalies and train-versus-test skew always apply."""

    drift: bool = True  # compare each new span's train split with the previous span's
    # The chance that a check of clean data alarms: shared by its features, comparisons and model views.
    false_positive_rate: float = param(0.001, above=0, below=1, flag="--false-positive-rate",
                                       commands=("validate", "drift"), help=FPR_HELP)


def validate(statistics: Statistics, schema: Schema, previous: Statistics | None = None, *, out_dir: Path,
             false_positive_rate: float = ValidateConfig.false_positive_rate,
             min_accuracy: float | None = None) -> Anomalies:
    """Checks each split against the schema (TRAINING environment), test against train with the
    schema's skew comparators, and train against the previous span's train with its drift comparators.
    Every class of the schema must have train and test examples, and the test split enough examples
    to measure accuracy against `min_accuracy` (`coverage`).

    Skew and drift are one check: on clean data, at most `false_positive_rate` of runs find either.

    The TFDV anomalies proto of each split is kept as `<out_dir>/<split>/anomalies.pbtxt`.
    """
    from google.protobuf import text_format

    tfdv = load_tfdv()
    proto_schema = tfdv.load_schema_text(schema.path)
    found: list[Anomaly] = []
    per_split = {split: tfdv.load_stats_binary(statistics.path(split)) for split in statistics.splits}
    for split, stats in per_split.items():
        split_anomalies, proto = anomalies_of(stats, proto_schema, split)
        found += split_anomalies
        if proto is not None:
            (out_dir / split).mkdir()
            (out_dir / split / "anomalies.pbtxt").write_text(text_format.MessageToString(proto))
    from components.schema import class_names

    found += coverage(per_split, class_names(proto_schema), min_accuracy)
    train = per_split["train"].datasets[0]
    distances = compare(train, per_split["test"].datasets[0], proto_schema, "skew: train vs test",
                        "skew_comparator")
    if previous is not None:
        before = tfdv.load_stats_binary(previous.path("train")).datasets[0]
        distances += compare(before, train, proto_schema, "drift: previous span train vs train")
    distances = decide(distances, false_positive_rate)
    found += breaches([d for d in distances if d.comparison.startswith("skew")], "test")
    found += breaches([d for d in distances if d.comparison.startswith("drift")], "train")
    return Anomalies(uri=str(out_dir), fingerprint="", anomalies=tuple(found), distances=tuple(distances))


def summarize(anomalies: Anomalies | None, info: dict) -> dict:
    """The run summary's `anomalies` and `drift` sections."""
    return {"anomalies": [dataclasses.asdict(a) for a in anomalies.anomalies] if anomalies else [],
            "drift": [dataclasses.asdict(d) for d in anomalies.distances] if anomalies else []}


def alarm_rate(cfg) -> float:
    """The chance a check of clean data alarms that a config sets, shared by all the check's tests."""
    return cfg.validate.false_positive_rate


def standalone_params(cfg) -> dict:
    """The parameters of `validate` outside a run (the `validate` command): no accuracy to plan for."""
    return {"false_positive_rate": alarm_rate(cfg)}


def _params(cfg, out, metadata) -> dict:
    from components.evaluate import min_accuracy

    return {**standalone_params(cfg), "min_accuracy": min_accuracy(cfg, out["ingest"])}


def _gate(anomalies: Anomalies, cfg) -> Stop | None:
    return Stop("blocked", str(ValidationFailed(anomalies.anomalies))) if anomalies.anomalies else None


def report_section(summary: dict, outputs) -> tuple[str, str, str]:
    """The run report's section: anomalies per split and feature, and every drift and skew comparison."""
    anomalies = (anomalies_table(summary.get("anomalies", []))
                 if "validate" in summary["components"] else "<p>Not validated.</p>")
    drift = f"<p>{TESTS_EXPLAINED}</p>" + tests_table(summary.get("drift", []), with_comparison=True)
    skew = [d for d in summary.get("drift", []) if d["comparison"].startswith("skew")]
    figures = ""
    if skew and "statistics" in outputs:
        try:
            tfdv, stats = load_tfdv(), outputs["statistics"]
            train, test = (tfdv.load_stats_binary(stats.path(s)).datasets[0] for s in ("train", "test"))
            figures = (f"<h3>Skew histograms</h3>{key('train', 'test')}"
                       f"<div class='grid'>{histograms(skew, train, test)}</div>")
        except Exception as exc:  # a report never fails a run; it says what is missing instead
            figures = unavailable("Histograms", exc)
    return "validation", "Validation", f"{anomalies}<h3>Drift and skew</h3>{drift}{figures}"


def validated_runs(metadata, root: str):
    """The finished executions, by node, of each run of the pipeline at `root` whose data passed validation,
    newest first."""
    return history.finished_runs(metadata, root, PASSED_VALIDATION, through=COMPONENT.name)


def previous_span_statistics(metadata, root: str, fingerprint: str) -> Statistics | None:
    """Statistics of the newest span before this one: the newest run of the pipeline at `root` over other
    data (another Examples fingerprint) that passed validation, whose statistics are still intact.
    """
    for done in validated_runs(metadata, root):
        examples, stats = (done.get(c.name, {}).get("output") for c in (INGEST, STATISTICS))
        if not (examples and stats):
            continue
        if examples["properties"].get("fingerprint") in (None, fingerprint):
            continue
        found = history.recorded(stats)  # an altered or deleted output is never compared with
        if isinstance(found, Statistics):
            return found
    return None


# 5: two classes at least, none too small to learn
COMPONENT = Component(name="validate", fn=validate, inputs=(Statistics, Schema, (Statistics, type(None))),
                      output=Anomalies, version="5", settings=ValidateConfig, params=_params, gate=_gate,
                      summary=summarize, report=report_section)
