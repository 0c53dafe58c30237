"""One run of the pipeline: executes the DAG and writes `<root>/runs/<run_id>/summary.json`."""
from __future__ import annotations

import dataclasses
import datetime
import errno
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from components.tune import distributed_role
from pipeline import config as config_module
from pipeline.config import Config
from pipeline.definition import ORDER, production
from pipeline.errors import PipelineError, ValidationFailed
from pipeline.failpoints import failpoint
from pipeline.lock import root_lock
from pipeline.metadata import Metadata
from pipeline.records import write_json, write_text
from pipeline.runner import Runner, StopRun

log = logging.getLogger("pipeline")
EXIT_CODES = {"pushed": 0, "tuned": 0, "partial": 0, "failed": 1, "blocked": 3, "not_blessed": 4}


def new_run_id() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


def _summary(run_id: str, cfg: Config, runner: Runner, status: str, error: str | None) -> dict[str, Any]:
    out = runner.outputs
    examples, hp, model, ev, pushed = (out.get(n) for n in ("ingest", "tune", "train", "evaluate", "push"))
    anomalies = out.get("validate")
    return {
        "run_id": run_id,
        "status": status,
        "error": error,
        "dataset": examples and {"spec": examples.spec, "source": examples.source,
                                 "fingerprint": examples.fingerprint, "counts": examples.counts},
        "schema": (s := out.get("schema")) and {"source": s.source, "uri": s.path},
        "components": runner.components,
        "anomalies": [dataclasses.asdict(a) for a in anomalies.anomalies] if anomalies else [],
        "drift": [dataclasses.asdict(d) for d in anomalies.distances] if anomalies else [],
        "tuning": hp and {"tuner": hp.tuner, "trials": list(hp.trials), "best_hyperparameters": hp.values,
                          "reused": runner.components["tune"].get("reused", False),
                          "tuner_id": os.environ.get("KERASTUNER_TUNER_ID") if distributed_role() else None},
        "training": model and {"history": model.history, "model": model.path,
                               "tensorboard": _tensorboard(cfg, run_id)},
        "evaluation": ev and {"accuracy": ev.accuracy, "loss": ev.loss, "min_accuracy": ev.min_accuracy,
                              "max_regression": ev.max_regression, "blessed": ev.blessed, "reasons": list(ev.reasons),
                              "failed": list(ev.failed),
                              "baseline": {"version": ev.baseline_version, "accuracy": ev.baseline_accuracy}
                              if ev.baseline_version is not None else None,
                              "per_class": list(ev.per_class),
                              "confusion_matrix": [list(row) for row in ev.confusion_matrix]},
        "pushed_model": pushed.uri if pushed else None,
        "push": pushed and {"version": pushed.version, "uri": pushed.uri, "infra_check": pushed.infra_check},
        "config": config_module.to_dict(cfg),
        "report": str(Path(cfg.root) / "runs" / run_id / "report.html"),
    }


def _tensorboard(cfg: Config, run_id: str) -> str | None:
    """This run's TensorBoard log directory, when this run trained or tuned (a cached train logs nothing)."""
    logs = Path(cfg.root) / "runs" / run_id / "tensorboard"
    return str(logs) if logs.is_dir() else None


DISK_FULL = {errno.ENOSPC: "No space left on device", errno.EFBIG: "File too large",
             errno.EDQUOT: "Disk quota exceeded"}


def disk_full(exc: BaseException) -> str | None:
    """A one-line message when `exc` is a write that ran out of space (Python's or TensorFlow's), else None."""
    text = str(exc)
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        where, reason = exc.filename or "the pipeline root", DISK_FULL[exc.errno]
    else:  # TensorFlow's errors carry the OS reason in their text: "<file>; File too large"
        reason = next((r for r in DISK_FULL.values() if r in text), None)
        if reason is None:
            return None
        where = text.split(";")[0].strip() if ";" in text else "the pipeline root"
    return f"{where}: disk full ({reason}); free space and run again: finished components are reused"


def execute(cfg: Config, use_cache: bool = True, start: str | None = None, stop: str | None = None,
            wait: bool = True) -> dict[str, Any]:
    """Runs the production pipeline and returns its summary.

    The run's directory `<root>/runs/<run_id>/` gets `summary.json`, the effective `config.yaml` and
    `report.html`; every execution and artifact is recorded in the ML Metadata store. `start` and `stop`
    (`--from`, `--to`) run part of the pipeline: before `start` everything comes from the cache, after
    `stop` nothing runs and the status is `partial`. Any error ends the run with status `failed` (or
    `blocked` for data validation) and its message in `error`; the records are written either way.

    One run at a time holds the root's lock (`pipeline.lock`); another waits for it, or with
    `wait=False` fails at once.

    Raises:
        LockedError: another run holds the root and `wait` is False (nothing has run).
        MetadataError: the metadata store cannot be opened (nothing has run).
        ConfigError: `start` or `stop` names no component, or `start` comes after `stop`.

    Example:
        >>> summary = execute(override(Config(), root="/tmp/root", **{"data.dataset": "idx:/data/mnist"}))
        >>> summary["status"], summary["pushed_model"]
        ('pushed', '/tmp/root/serving/1')
    """
    run_id = new_run_id()
    distributed = distributed_role() is not None  # a distributed search never comes from the cache
    with root_lock(cfg.root, run_id, wait=wait, shared=distributed):
        return _execute(cfg, run_id, use_cache, start, stop, distributed)


def _execute(cfg: Config, run_id: str, use_cache: bool, start: str | None, stop: str | None,
             distributed: bool) -> dict[str, Any]:
    run_dir = Path(cfg.root) / "runs" / run_id
    metadata = Metadata.open(cfg)
    runner = Runner(cfg.root, use_cache=use_cache, run_dir=run_dir, order=ORDER, start=start, stop=stop,
                    metadata=metadata,
                    force=frozenset({"tune"}) if cfg.tune.retune or distributed else frozenset())
    config_text = config_module.to_yaml(cfg)
    write_text(run_dir / "config.yaml", config_text)
    metadata.start_run(run_id, cfg.root, config_text, cfg.data.dataset, alone=not distributed)
    status, error = "pushed", None
    try:
        status = production(cfg, runner)
        if status == "not_blessed":
            error = "model not blessed: " + "; ".join(runner.outputs["evaluate"].failed)
    except StopRun:
        status = "partial"
    except ValidationFailed as exc:
        status, error = "blocked", str(exc)
    except PipelineError as exc:
        status, error = "failed", str(exc)
    except Exception as exc:  # recorded as a failed run; the CLI turns it into one line
        log.debug("unexpected error", exc_info=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        status, error = "failed", disk_full(exc) or f"internal error: {type(exc).__name__}: {first}"
    failpoint("run.summary")
    summary = _summary(run_id, cfg, runner, status, error)
    write_json(run_dir / "summary.json", summary)
    failpoint("run.summarized")  # the summary says how it ended; the store still says running
    metadata.finish_run(status, error, summary["report"])
    lineage = None
    if summary["push"]:
        lineage = metadata.lineage(summary["push"]["uri"])
    from pipeline.report import run_html

    run_html(summary, runner.outputs, lineage, run_dir / "report.html")
    return summary
