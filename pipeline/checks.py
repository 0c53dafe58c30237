"""The `validate` and `drift` commands: checks of a dataset on its own, or against a baseline."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from components import ingest, schema, statistics, validate
from components.drift import compare, fixed_histogram
from components.libs import load_tfdv
from pipeline.config import Config, DataConfig
from pipeline.engine.errors import DataError
from pipeline.engine.runner import Runner
from pipeline.report import drift_html


def statistics_for(spec: str, runner: Runner, beam_args: tuple[str, ...] = ()):
    """DatasetFeatureStatistics of a split: `SPEC[:SPLIT]` (default train) or a saved statistics file.

    Returns the statistics and the dataset name (for its curated schema; "" for a file).
    """
    tfdv = load_tfdv()
    if Path(spec).is_file():
        stats = None
        for load in (tfdv.load_stats_binary, tfdv.load_statistics):  # a binary proto, or TFRecord
            try:
                stats = load(spec)
                break
            except Exception:  # TFDV raises several kinds for a file that is not in its format
                continue
        if stats is None:
            raise DataError(f"{spec}: not a TFDV statistics file")
        if not stats.datasets:
            raise DataError(f"{spec}: holds no dataset statistics")
        return stats.datasets[0], ""
    split, examples, stats = _ingest_and_describe(spec, runner, beam_args)
    return tfdv.load_stats_binary(stats.path(split or "train")).datasets[0], examples.name


def _ingest_and_describe(spec: str, runner: Runner, beam_args: tuple[str, ...]):
    """Ingests the dataset of `SPEC[:SPLIT]` and computes its statistics; returns (split or None, both)."""
    parsed = ingest.DatasetSpec.parse(spec)
    whole = spec[: -len(parsed.split) - 1] if parsed.split else spec
    examples = runner(ingest.COMPONENT, data=DataConfig(dataset=whole))
    return parsed.split, examples, runner(statistics.COMPONENT, examples, beam_args=beam_args)


def validate_check(spec: str, cfg: Config) -> dict[str, Any]:
    """Statistics and anomalies of a dataset (or one split of it) against its schema.

    Without a split suffix every split is checked and test is compared with train (skew).

    Example:
        >>> validate_check("idx:/data/new:test", Config())["clean"]
        True
    """
    runner = Runner(cfg.root)
    split, examples, stats = _ingest_and_describe(spec, runner, cfg.statistics.beam_args)
    path = schema.curated_schema_path(cfg.schema_dir, examples.name, cfg.schema.schema_file)
    data_schema = runner(schema.COMPONENT, stats, curated=path, classes=examples.classes)
    result = runner(validate.COMPONENT, stats, data_schema, None)
    anomalies = [a for a in result.anomalies if split is None or (a.split == split and a.type != "SKEW")]
    distances = list(result.distances) if split is None else []
    return {"dataset": spec, "schema": data_schema.source, "source": examples.source,
            "counts": {s: n for s, n in examples.counts.items() if split in (None, s)},
            "clean": not anomalies, "anomalies": [dataclasses.asdict(a) for a in anomalies],
            "distances": [dataclasses.asdict(d) for d in distances]}


def drift_check(baseline: str, current: str, cfg: Config, report: str | None = None) -> dict[str, Any]:
    """Compares `current` with `baseline` using the drift thresholds of the current data's schema.

    The current data's schema anomalies come along; with `report`, a self-contained HTML file too.

    Datasets are ingested and their statistics computed under `cfg.root`, cached like a run's.

    Example:
        >>> report = drift_check("fashion_mnist:train", "idx:/data/today", Config())
        >>> [d["feature"] for d in report["distances"] if d["drifted"]]
        ['mean_intensity']
    """
    runner = Runner(cfg.root)
    before, before_name = statistics_for(baseline, runner, cfg.statistics.beam_args)
    after, after_name = statistics_for(current, runner, cfg.statistics.beam_args)
    path = schema.curated_schema_path(cfg.schema_dir, after_name or before_name, cfg.schema.schema_file)
    if path is None:
        raise DataError(f"{cfg.schema_dir}: no schema with drift thresholds; pass --schema FILE")
    proto = schema.load_schema(path)
    distances = compare(before, after, proto, f"drift: {baseline} vs {current}")
    if not distances:
        raise DataError(f"{path}: no feature of the schema has a drift comparator that both datasets have")
    from tensorflow_metadata.proto.v0 import statistics_pb2

    # Images without labels (serving traffic) are checked as the schema's SERVING environment: no label.
    labelled = {name: bool((counts := fixed_histogram(stats, schema.LABEL)) is not None and counts.sum())
                for name, stats in (("baseline", before), ("current", after))}
    anomalies, _ = validate.anomalies_of(statistics_pb2.DatasetFeatureStatisticsList(datasets=[after]), proto,
                                         "current", "TRAINING" if labelled["current"] else "SERVING")
    result = {"baseline": baseline, "current": current, "schema": str(path),
              **({"label": "not compared: the " + " and the ".join(n for n, has in labelled.items() if not has)
                           + " data have no labels"} if not all(labelled.values()) else {}),
              "counts": {"baseline": before.num_examples, "current": after.num_examples},
              "drifted": any(d.drifted for d in distances),
              "distances": [dataclasses.asdict(d) for d in distances],
              "anomalies": [dataclasses.asdict(a) for a in anomalies]}
    if report:
        drift_html(result, before, after, report)
    return result


def infer_schema_text(spec: str, cfg: Config) -> str:
    """A draft schema inferred from a dataset's train statistics, for review before curating it.

    It carries the MNIST-family contract, each summary feature's observed range widened by 10% (at least
    2% of its possible range), the default drift and skew thresholds (see
    `components.schema.apply_contract`), and the data's classes: their names, or for numbered labels as
    many as the train split holds.

    Example:
        >>> Path("schemas/kmnist.pbtxt").write_text(infer_schema_text("tfds:kmnist", Config()))
    """
    runner = Runner(cfg.root)
    _, examples, stats = _ingest_and_describe(spec, runner, cfg.statistics.beam_args)
    classes = examples.classes
    counts = fixed_histogram(load_tfdv().load_stats_binary(stats.path("train")).datasets[0], schema.LABEL)
    if not classes and counts is not None and counts.any():  # numbered labels: as many classes as observed
        classes = schema.numbered(int(np.flatnonzero(counts)[-1]) + 1)
    inferred = runner(schema.COMPONENT, stats, curated=None, classes=classes)
    return Path(inferred.path).read_text()
