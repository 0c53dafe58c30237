"""The `drift` command: distances between two datasets (or saved statistics) on shared buckets."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from components import ingest, schema, statistics
from components.drift import compare
from pipeline.config import Config, DataConfig
from pipeline.errors import DataError
from pipeline.libs import load_tfdv
from pipeline.runner import Runner


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
    parsed = ingest.DatasetSpec.parse(spec)
    whole = spec[: -len(parsed.split) - 1] if parsed.split else spec
    examples = runner(ingest.COMPONENT, data=DataConfig(dataset=whole))
    stats = runner(statistics.COMPONENT, examples, beam_args=beam_args)
    return tfdv.load_stats_binary(stats.path(parsed.split or "train")).datasets[0], examples.name


def drift_check(baseline: str, current: str, cfg: Config) -> dict[str, Any]:
    """Compares `current` with `baseline` using the drift thresholds of the current data's schema.

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
    distances = compare(before, after, schema.load_schema(path), f"drift: {baseline} vs {current}")
    if not distances:
        raise DataError(f"{path}: no feature of the schema has a drift comparator that both datasets have")
    return {"baseline": baseline, "current": current, "schema": str(path),
            "counts": {"baseline": before.num_examples, "current": after.num_examples},
            "drifted": any(d.drifted for d in distances),
            "distances": [dataclasses.asdict(d) for d in distances]}
