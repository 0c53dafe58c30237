"""Validate: TFDV anomalies of every split, skew of test against train, drift against the previous span."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from components.drift import compare, decide
from components.libs import load_tfdv
from pipeline.engine.artifacts import Anomalies, Anomaly, Distance, Schema, Statistics
from pipeline.engine.component import Component


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
        found.append(Anomaly(split, feature, kinds, info.description))
    return found, result


def why(d: Distance) -> str:
    """Why a test drifted (or not), in one line: the test, its statistic, p-value and level, the effect."""
    return (f"{d.comparison}: {d.test} {d.statistic:.1f}" + (f" ({d.dof} dof)" if d.dof else "")
            + f", p {d.p_value:.1e} {'<=' if d.p_value <= d.alpha else '>'} alpha {d.alpha:.1e}; {d.measure} "
            f"{d.distance:.4f} {'>=' if d.distance >= d.threshold else '<'} minimum effect {d.threshold:.4f}")


def breaches(distances: list[Distance], split: str) -> list[Anomaly]:
    """Drifted tests, as anomalies naming the feature, the test, its p-value and the effect size."""
    return [Anomaly(split, d.feature, d.comparison.split(":")[0].upper(), why(d)) for d in distances if d.drifted]


def validate(statistics: Statistics, schema: Schema, previous: Statistics | None = None, *,
             out_dir: Path, false_positive_rate: float = 0.001) -> Anomalies:
    """Checks each split against the schema (TRAINING environment), test against train with the
    schema's skew comparators, and train against the previous span's train with its drift comparators.

    Skew and drift are one check: on clean data, at most `false_positive_rate` of runs find either.

    The TFDV anomalies proto of each split is kept as `<out_dir>/<split>/anomalies.pbtxt`.

    Example:
        >>> found = validate(stats, schema, out_dir=Path("/tmp/anomalies")).anomalies
        >>> [(a.split, a.feature, a.type) for a in found]
        [('train', 'label', 'INT_TYPE_BIG_INT')]
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


COMPONENT = Component(name="validate", fn=validate, inputs=(Statistics, Schema, (Statistics, type(None))),
                      output=Anomalies, version="3")  # 3: a G-test at a chosen false-positive rate
