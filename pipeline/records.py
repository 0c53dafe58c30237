"""Run records under `<root>/runs/<run_id>/summary.json`: written atomically, read back by later runs."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

from pipeline import artifacts
from pipeline.artifacts import HyperParameters, PushedModel, Statistics
from pipeline.runner import Runner

PASSED_VALIDATION = ("pushed", "not_blessed")


def write_text(path: Path, text: str) -> None:
    """Writes a file atomically: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, data: dict) -> None:
    """Writes JSON atomically."""
    write_text(path, json.dumps(data, indent=2, default=str))


def summaries(root: str | Path) -> Iterator[dict[str, Any]]:
    """Run summaries of a root, newest first (run ids sort by start time); unreadable ones are skipped."""
    for path in sorted((Path(root) / "runs").glob("*/summary.json"), reverse=True):
        try:
            yield json.loads(path.read_text())
        except (OSError, ValueError):
            continue


def previous_span_statistics(root: str | Path, fingerprint: str) -> Statistics | None:
    """Statistics of the newest span before this one: the latest run on other data that passed validation.

    Example:
        >>> previous_span_statistics("pipeline_root", examples.fingerprint).path("train")
        'pipeline_root/artifacts/statistics/5d1c.../train/FeatureStats.pb'
    """
    for summary in summaries(root):
        dataset = summary.get("dataset") or {}
        validated = summary.get("status") in PASSED_VALIDATION or (
            summary.get("status") == "partial" and "validate" in summary.get("components", {}))
        if validated and dataset.get("fingerprint") not in (None, fingerprint):
            uri = summary["components"].get("statistics", {}).get("uri")
            stats, _ = Runner.cached(Path(uri)) if uri else (None, None)
            if isinstance(stats, Statistics):
                return stats
    return None


def reusable_hyperparameters(root: str | Path, search: str) -> HyperParameters | None:
    """The newest search result under `root` with the same schema, search space and settings.

    Example:
        >>> reusable_hyperparameters("pipeline_root", tune.search_key(schema, cfg.tune, 128, 42)).values
        {'conv_blocks': 2, ...}
    """
    found = []
    for record in (Path(root) / "artifacts" / "tune").glob(f"*/{artifacts.RECORD}"):
        candidate, _ = Runner.cached(record.parent)  # an altered result is never reused
        if isinstance(candidate, HyperParameters) and candidate.search == search:
            found.append((record.stat().st_mtime, candidate))
    return max(found, key=lambda item: item[0])[1] if found else None


def latest_blessed(root: str | Path, serving_dir: str | Path, model_fingerprint: str) -> PushedModel | None:
    """The model serving now: the newest run's push into `serving_dir` whose version is still there.

    A pushed copy of the model being evaluated (`model_fingerprint`) is skipped: a model is not its own
    baseline, and a re-run of an identical build stays cached.

    Example:
        >>> latest_blessed("pipeline_root", "pipeline_root/serving", model.fingerprint).version
        3
    """
    serving = Path(serving_dir).resolve()
    for summary in summaries(root):
        # Runs recorded before the `push` section existed name only `pushed_model` (`<serving_dir>/<version>`).
        uri = (summary.get("push") or {}).get("uri") or summary.get("pushed_model")
        if summary.get("status") != "pushed" or not uri or not Path(uri).name.isdigit():
            continue
        version = Path(uri)
        try:
            info = json.loads((version / "model_info.json").read_text())
        except (OSError, ValueError):
            continue  # removed from serving, or not a version this pipeline wrote
        if version.resolve().parent != serving or not (version / "saved_model.pb").is_file():
            continue
        if info.get("model_fingerprint") == model_fingerprint:
            continue
        key = hashlib.sha256(f"{version.resolve()}|{info.get('model_fingerprint')}".encode()).hexdigest()
        return PushedModel(uri=str(version), fingerprint=key, version=int(version.name),
                           model_fingerprint=info.get("model_fingerprint", ""))
    return None
