"""Final training in a process of its own, for a multi-worker cluster: its strategy must come before any TensorFlow op."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from engine import errors
from engine.child import last_error_line, supervise
from engine.progress import Bar, follow

log = logging.getLogger("pipeline")
ENV = "PIPELINE_TRAIN_PROCESS"  # set in the training process: it trains instead of starting another


def run(examples, schema, hyperparameters, *, out_dir: Path, train, work: Path, **kwargs: Any):
    """Runs `components.train.train` with these arguments in a new Python process and returns its Model.

    The process's log lines (each epoch's) are logged here as they come; a pipeline error it raised is
    raised here with its class and message.

    Raises:
        PipelineError: the training process raised it (WorkerLost when a worker of the cluster was lost).
        RuntimeError: the training process failed otherwise; the message ends with its last error line.
    """
    from components.train import Model

    folder = work / "process"
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"examples": examples.to_dict(), "schema": schema.to_dict(), "hyperparameters": hyperparameters.to_dict(),
            "out_dir": str(out_dir), "train": dataclasses.asdict(train), "work_dir": str(work),
            **{k: str(v) if isinstance(v, Path) else v for k, v in kwargs.items()}}
    paths = {name: folder / name for name in ("spec.json", "result.json", "log.txt", "stderr.log", "progress.json")}
    paths["spec.json"].write_text(json.dumps(spec))
    for name in ("result.json", "log.txt", "progress.json"):
        paths[name].unlink(missing_ok=True)
    env = {**os.environ, ENV: "1", "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
    seen = [0]

    def watch():
        seen[0] = _relay(paths["log.txt"], seen[0])
        follow(paths["progress.json"], bar)

    with Bar("train", total=1, unit="batches") as bar:
        code = supervise("components.train_process", [str(folder)], env, paths["stderr.log"], watch)
    result = json.loads(paths["result.json"].read_text()) if paths["result.json"].is_file() else {}
    if "error" in result:
        kind = getattr(errors, result["error"], None)
        raise (kind if isinstance(kind, type) and issubclass(kind, Exception) else RuntimeError)(result["message"])
    if code != 0 or "model" not in result:
        raise RuntimeError(f"training process exited with {code}: {last_error_line(paths['stderr.log'])}")
    return Model.from_dict(result["model"])


def _relay(path: Path, seen: int) -> int:
    """Logs the lines the training process added to its log since `seen` characters; returns the new count."""
    try:
        text = path.read_text()
    except OSError:
        return seen
    complete = text[:text.rfind("\n") + 1]
    for line in complete[seen:].splitlines():
        log.info("%s", line)
    return len(complete)


def main(folder: str) -> int:
    """The training process: trains from `folder/spec.json`, writes `folder/result.json`."""
    from components.ingest import Examples
    from components.schema import Schema
    from components.train import TrainConfig, train
    from components.tune import HyperParameters

    folder_path = Path(folder)
    handler = logging.FileHandler(folder_path / "log.txt")
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    spec = json.loads((folder_path / "spec.json").read_text())
    kwargs = {k: Path(spec.pop(k)) if spec.get(k) is not None else None for k in ("out_dir", "work_dir", "run_dir")}
    try:
        model = train(Examples.from_dict(spec.pop("examples")), Schema.from_dict(spec.pop("schema")),
                      HyperParameters.from_dict(spec.pop("hyperparameters")), train=TrainConfig(**spec.pop("train")),
                      report=folder_path / "progress.json", **kwargs, **spec)
        result = {"model": model.to_dict()}
    except errors.PipelineError as exc:
        result = {"error": type(exc).__name__, "message": str(exc)}
    except Exception as exc:  # a collective that failed before or after fit: a member is gone
        from components.devices import cluster, lost_worker

        where = cluster()
        lost = lost_worker(exc, where) if where is not None else None
        if lost is None:
            raise
        result = {"error": type(lost).__name__, "message": str(lost)}
    tmp = folder_path / "result.tmp"
    tmp.write_text(json.dumps(result))
    os.replace(tmp, folder_path / "result.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
