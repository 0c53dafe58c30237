"""One node of a run in a process of its own: what an orchestrator (Kubeflow Pipelines) schedules as a task."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline import config as config_module
from pipeline.config import Config
from pipeline.definition import PRODUCTION
from engine.dag import Pipeline, Stop, run_node
from engine.errors import ConfigError, MetadataError, PipelineError
from engine.history import run_outputs
from engine.lock import root_lock
from engine.metadata import Metadata
from engine.runner import Runner
from engine.signals import interruptible
from pipeline.local import EXIT_CODES, check_run_id, finish_run, guarded, open_run

log = logging.getLogger("pipeline")


def execute_step(cfg: Config, name: str, run_id: str, pipeline: Pipeline = PRODUCTION,
                 use_cache: bool = True) -> dict[str, Any]:
    """Executes node `name` of run `run_id`: its inputs are the outputs the run's earlier steps recorded
    in the metadata store (on any machine sharing it), its output is cached and recorded in the same
    run's context. A retried step finds its output cached and does nothing more.

    The step that ends the run (the last node, a gate that stops it, or an error) sets the run's status
    and writes its summary and report; an earlier step leaves the run `running`. A step after a gate
    that stopped the run (push after an evaluation that did not bless the model) does no work and says so.

    Returns the step's result: the run's status after it, the step's state and output, and the run's
    summary once the run ended. Its exit code is the run's (`EXIT_CODES`).

    Raises:
        ConfigError: `name` is not a node of the pipeline.
        PipelineError: an upstream step of this run has not recorded its output yet.
    """
    config_module.check(cfg)
    if name not in pipeline.node:
        raise ConfigError(f"step {name}: unknown component; expected one of {', '.join(pipeline.order)}")
    node = pipeline.node[name]
    with root_lock(cfg.root, check_run_id(run_id)), interruptible():
        metadata, runner, stopped = _join(cfg, run_id, pipeline, use_cache, pipeline.order.index(name))
        if stopped:  # e.g. push after a model that was not blessed: the run ended there
            prior, stop = stopped
            log.info("%-10s skipped: run %s ended after %s (%s)", name, run_id, prior, stop.status)
            return {"run_id": run_id, "step": name, "state": "skipped", "status": stop.status,
                    "error": f"{name}: nothing to do: {stop.error or stop.status} (after {prior})", "output": None}
        missing = [u for u in node.upstream() if u not in runner.outputs]
        if missing:
            raise PipelineError(f"step {name}: run {run_id} has no recorded output of {', '.join(missing)}; "
                                f"run {'that step' if len(missing) == 1 else 'those steps'} first")
        last = name == pipeline.order[-1]
        status, error = guarded(lambda: run_node(node, cfg, runner, metadata), pipeline.final_status if last else "running")
        try:
            recorded = metadata.run(run_id)
        except MetadataError as exc:  # the summary and report are still written, and say why
            recorded, status, error = {"status": "failed"}, "failed", str(exc)
        if status == "running" and recorded["status"] not in ("running", "failed", "interrupted"):
            status, error = recorded["status"], recorded["error"] or None  # a step of a run that ended, again
        summary = finish_run(pipeline, cfg, run_id, metadata, runner, status, error)
        # A store that could not take the run's end fails it: the step's exit code is the summary's.
        status, error = summary["status"], summary["error"]
        result = {"run_id": run_id, "step": name, "state": runner.records.get(name, {}).get("state", "failed"),
                  "status": status, "error": error,
                  "output": runner.outputs[name].to_dict() if name in runner.outputs else None}
        return result | ({"summary": summary} if status != "running" else {})


def _join(cfg: Config, run_id: str, pipeline: Pipeline, use_cache: bool,
          before: int) -> tuple[Metadata, Runner, tuple[str, Stop] | None]:
    """Joins run `run_id` (starting it when no step has) with the outputs its steps recorded for the first
    `before` nodes; the last is the node whose gate stopped the run with its `Stop`, if one did."""
    metadata, runner = open_run(cfg, run_id, pipeline, use_cache, alone=False)
    earlier = run_outputs(metadata, run_id)
    for prior in pipeline.order[:before]:
        if prior in earlier:
            artifact, execution = earlier[prior]
            runner.outputs[prior] = artifact
            runner.records[prior] = {"state": execution["state"], "seconds": execution["seconds"] or 0.0,
                                     "uri": artifact.uri}
            gate = pipeline.node[prior].gate
            stopped = gate(artifact, cfg) if gate else None
            if stopped:
                return metadata, runner, (prior, stopped)
    return metadata, runner, None


def finish_steps(cfg: Config, run_id: str, pipeline: Pipeline = PRODUCTION) -> dict[str, Any]:
    """Ends run `run_id` when its steps stopped without ending it: what an orchestrator runs after them, however
    they ended (KFP's exit handler). A step killed outright (SIGKILL, out of memory) records nothing, so the
    store still says `running`: the run is then recorded `failed`, naming the first node without a recorded
    output, with its summary and report written as a run's end writes them (or ended as the gate of a step
    killed just after recording its output says). A run that ended is left as it is.

    Returns the result `execute_step` returns, for step `finish`, with the run's summary.
    """
    config_module.check(cfg)
    with root_lock(cfg.root, check_run_id(run_id)), interruptible():
        metadata, runner, stopped = _join(cfg, run_id, pipeline, True, len(pipeline.order))
        result = {"run_id": run_id, "step": "finish", "state": "skipped", "output": None}
        recorded = metadata.run(run_id)
        summary_path = Path(cfg.root) / "runs" / run_id / "summary.json"
        if recorded["status"] != "running" and summary_path.is_file():
            return result | {"status": recorded["status"], "error": recorded["error"] or None,
                             "summary": json.loads(summary_path.read_text())}
        unfinished = next((n for n in pipeline.order if n not in runner.outputs), None)
        if stopped:
            status, error = stopped[1].status, stopped[1].error
        elif unfinished is None:
            status, error = pipeline.final_status, None
        else:
            status, error = "failed", (f"step {unfinished} ended without recording how (killed, e.g. by SIGKILL "
                                       "or out of memory)")
        log.info("%-10s run %s ended %s", "finish", run_id, status)
        summary = finish_run(pipeline, cfg, run_id, metadata, runner, status, error)
        return result | {"state": "executed", "status": summary["status"], "error": summary["error"],
                         "summary": summary}


def exit_code(result: dict[str, Any]) -> int:
    """The step's exit code: the run's code for its status (0 while the run goes on)."""
    return 0 if result["status"] == "running" else EXIT_CODES[result["status"]]
