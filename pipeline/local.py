"""The local orchestrator: one run of the pipeline in this process, recorded in `<root>/runs/<run_id>/` and ML Metadata."""
from __future__ import annotations

import datetime
import errno
import json
import logging
import re
import secrets
import sys
from pathlib import Path
from typing import Any, Callable

from components.versions import unrecorded_versions
from components.devices import multi_worker
from components.tune import distributed_role
from pipeline import config as config_module
from pipeline.config import Config
from pipeline.definition import PRODUCTION
from engine.errors import (ConfigError, Interrupted, MetadataError, NotBlessed, PipelineError,
                                    ValidationFailed, first_line)
from engine.failpoints import failpoint
from engine.files import write_json, write_text
from engine.lock import root_lock
from engine.dag import Pipeline, Stop, run_node
from engine.metadata import Metadata, live_of_type
from engine.runner import Runner, StopRun
from engine.signals import deferred, interruptible, settle

log = logging.getLogger("pipeline")
EXIT_CODES = {"pushed": 0, "tuned": 0, "trained": 0, "partial": 0, "failed": 1, "blocked": 3, "not_blessed": 4,
              "interrupted": 130}


RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_run_id(run_id: str) -> str:
    """Returns `run_id` when it can name the run's directory, else raises ConfigError."""
    if not RUN_ID.fullmatch(run_id):
        raise ConfigError(f"--run-id {run_id!r}: expected up to 128 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit")
    return run_id


def new_run_id() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


def summarize(pipeline: Pipeline, run_id: str, cfg: Config, runner: Runner, status: str,
              error: str | None) -> dict[str, Any]:
    """The run summary: status, error, each node's own sections (see `Node.summary`), the components'
    states, the effective config and where the report is."""
    run_dir = Path(cfg.root) / "runs" / run_id
    summary: dict[str, Any] = {"run_id": run_id, "status": status, "error": error}
    for node in pipeline.nodes:
        if node.summary:
            info = {"record": runner.records.get(node.name, {}), "run_dir": run_dir, "cfg": cfg}
            summary |= node.summary(runner.outputs.get(node.name), info)
    if pipeline.summary:
        summary |= pipeline.summary(summary, {"cfg": cfg, "deadline": runner.deadline, "records": runner.records})
    return summary | {
        "components": runner.records, "config": config_module.to_dict(cfg), "report": str(run_dir / "report.html")}


DISK_FULL = {errno.ENOSPC: "No space left on device", errno.EFBIG: "File too large",
             errno.EDQUOT: "Disk quota exceeded"}


def disk_full(exc: BaseException) -> str | None:
    """A one-line message when `exc` is a write that ran out of space (Python's or TensorFlow's), else None."""
    while not (isinstance(exc, OSError) and exc.errno in DISK_FULL) and exc.__cause__ is not None:
        exc = exc.__cause__  # e.g. the search stopped (FatalError) because a trial's write failed
    text = str(exc)
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        where, reason = exc.filename or "the pipeline root", DISK_FULL[exc.errno]
    else:  # TensorFlow's errors carry the OS reason in their text: "<file>; File too large"
        reason = next((r for r in DISK_FULL.values() if r in text), None)
        if reason is None:
            return None
        where = text.split(";")[0].strip() if ";" in text else "the pipeline root"
    return f"{where}: disk full ({reason}); free space and run again: finished components are reused"


def quiet_disk_full_cleanup() -> None:
    """After a write ran out of space, the objects it leaves (a half-written Keras `.keras` zip) fail again as
    they are collected, and Python prints `Exception ignored in ZipFile.__del__` with a traceback: those
    disk-full failures of clean-up go to the debug log; any other still reaches the previous hook."""
    previous = sys.unraisablehook
    if getattr(previous, "quiets_disk_full", False):
        return

    def hook(unraisable):
        if unraisable.exc_value is not None and disk_full(unraisable.exc_value):
            log.debug("%s: %s", unraisable.err_msg or "ignored", unraisable.exc_value)
        else:
            previous(unraisable)

    hook.quiets_disk_full = True
    sys.unraisablehook = hook


def execute(cfg: Config, use_cache: bool = True, start: str | None = None, stop: str | None = None,
            wait: bool = True, pipeline: Pipeline = PRODUCTION, run_id: str | None = None) -> dict[str, Any]:
    """Runs `pipeline` (the production pipeline unless given) on this machine and returns its summary.

    The run's directory `<root>/runs/<run_id>/` gets `summary.json`, the effective `config.yaml` and
    `report.html`; every execution and artifact is recorded in the ML Metadata store. `start` and `stop`
    (`--from`, `--to`) run part of the pipeline: before `start` everything comes from the cache, after
    `stop` nothing runs and the status is `partial`. Any error ends the run with status `failed` (or
    `blocked` for data validation) and its message in `error`; the records are written either way. SIGINT
    or SIGTERM ends it `interrupted` the same way (`engine.signals`).

    One run at a time holds the root's lock (`engine.lock`); another waits for it, or with
    `wait=False` fails at once.

    Raises:
        LockedError: another run holds the root and `wait` is False (nothing has run).
        MetadataError: the metadata store cannot be opened (nothing has run).
        ConfigError: `start` or `stop` names no component, or `start` comes after `stop`.
    """
    config_module.check(cfg)  # a bad value (or dataset spec, or --from/--to) stops the run before any record
    pipeline.between(start, stop)
    run_id = check_run_id(run_id) if run_id is not None else new_run_id()
    # The members of a distributed search or training share the root: each output is computed by one of them.
    distributed = distributed_role() is not None or multi_worker(cfg.train.distribute) is not None
    with root_lock(cfg.root, run_id, wait=wait, shared=distributed), interruptible():
        return _execute(cfg, run_id, use_cache, start, stop, distributed, pipeline)


def _execute(cfg: Config, run_id: str, use_cache: bool, start: str | None, stop: str | None,
             distributed: bool, pipeline: Pipeline = PRODUCTION) -> dict[str, Any]:
    metadata, runner = open_run(cfg, run_id, pipeline, use_cache, start, stop, distributed, alone=not distributed,
                                fresh=True)

    def every_node() -> Stop | None:
        for node in pipeline.nodes:
            stopped = run_node(node, cfg, runner, metadata)
            if stopped:
                return stopped
        return None

    status, error = guarded(every_node, pipeline.final_status)
    return finish_run(pipeline, cfg, run_id, metadata, runner, status, error)


def open_run(cfg: Config, run_id: str, pipeline: Pipeline, use_cache: bool = True, start: str | None = None,
             stop: str | None = None, distributed: bool = False, alone: bool = True,
             fresh: bool = False) -> tuple[Metadata, Runner]:
    """Opens the store and joins (or starts) the run's context, writing its effective config; returns the
    store and a runner recording into it. `alone`: this process holds the root exclusively, so runs
    still marked running were killed (see `Metadata.start_run`). `fresh`: a whole run, whose id must be
    new (a step joins the run its first step started).

    Raises:
        ConfigError: `fresh` and the store or the root already has a run of this id.
    """
    run_dir = Path(cfg.root) / "runs" / run_id
    metadata = Metadata.open(cfg)
    if fresh and (metadata.has_run(run_id) or run_dir.exists()):
        raise ConfigError(f"--run-id '{run_id}': a run of this id already exists in {metadata.name} or "
                          f"{run_dir}; expected a new id (leave --run-id out for one)")
    config_text = config_module.to_yaml(cfg)
    write_text(run_dir / "config.yaml", config_text)
    metadata.start_run(run_id, cfg.root, config_text, cfg.data.dataset, alone=alone)
    runner = Runner(cfg.root, use_cache=use_cache, run_dir=run_dir, order=pipeline.order, start=start, stop=stop,
                    metadata=metadata, shared=distributed, deadline=run_deadline(cfg, metadata, run_id),
                    force=pipeline.rerun(cfg))
    return metadata, runner


def run_deadline(cfg: Config, metadata: Metadata, run_id: str) -> float | None:
    """When the run's `--budget` ends: its start as the store recorded it (the first step's, for a run
    made of steps on several machines) plus the budget; None without a budget."""
    if cfg.budget_seconds is None:
        return None
    started = metadata.run(run_id)["started"]
    return datetime.datetime.fromisoformat(started).timestamp() + cfg.budget_seconds


def guarded(work: Callable[[], Stop | None], done: str) -> tuple[str, str | None]:
    """Runs `work` and returns the run's status and error: the `Stop` it returned, else `done`; `partial`
    after `--to`; `blocked` for data that failed validation; `failed` with a one-line message otherwise."""
    try:
        stopped = work()
        return (stopped.status, stopped.error) if stopped else (done, None)
    except StopRun:
        return "partial", None
    except Interrupted as exc:  # SIGINT or SIGTERM: recorded at once, with the summary of what finished
        return "interrupted", str(exc)
    except ValidationFailed as exc:
        return "blocked", str(exc)
    except NotBlessed as exc:  # decided again at push time, against a version that appeared meanwhile
        return "not_blessed", str(exc)
    except PipelineError as exc:
        return "failed", str(exc)
    except Exception as exc:  # recorded as a failed run; the CLI turns it into one line
        log.debug("unexpected error", exc_info=True)
        full = disk_full(exc)
        if full:
            quiet_disk_full_cleanup()
        return "failed", full or f"internal error: {type(exc).__name__}: {first_line(exc, default='')}"


def _unrecorded(pipeline: Pipeline, cfg: Config, metadata: Metadata) -> dict[str, Any]:
    """The summary's `unrecorded_versions`: versions this root pushed that its store lacks (it failed while
    recording them). Each is recorded in the run that pushed it when that run's summary and the committed
    push say what it was pushed from (`_record_late`); any other is named on every run."""
    try:
        versions = unrecorded_versions(cfg.serving_dir, cfg.root,
                                       [a["uri"] for a in live_of_type(metadata, "PushedModel")])
        versions = [v for v in versions if not _record_late(pipeline, cfg, metadata, v)]
    except (MetadataError, OSError):  # advisory: a store or serving directory that cannot be read says so elsewhere
        return {}
    for version in versions:
        log.warning("%s was pushed from this root but the metadata store has no record of it", version)
    return {"unrecorded_versions": versions} if versions else {}


def _record_late(pipeline: Pipeline, cfg: Config, metadata: Metadata, version: str) -> bool:
    """Records the push of `version` in the run whose summary says it pushed it, with the inputs that run
    recorded, as that run would have; False when the runs' files do not say enough."""
    from engine import artifacts

    node = next((n for n in pipeline.nodes if n.component.output.kind == "PushedModel"), None)
    same = Path(version).resolve()
    try:
        for path in sorted((Path(cfg.root) / "runs").glob("*/summary.json")):
            summary = json.loads(path.read_text())
            if node is None or not summary.get("push") or Path(summary["push"]["uri"]).resolve() != same:
                continue
            records = (Path(cfg.root) / "artifacts" / node.name).glob(f"*/{artifacts.RECORD}")
            output = next(o for o in (artifacts.load(r.parent) for r in records) if Path(o.uri).resolve() == same)
            inputs = tuple(artifacts.load(summary["components"][name]["uri"]) for name in node.inputs)
            with metadata.in_run(summary["run_id"]):
                metadata.record(node.component, inputs, output, "executed", summary["components"][node.name]["seconds"],
                                "", {}, digest=None)
            log.info("%s: recorded in run %s, which pushed it", version, summary["run_id"])
            return True
    except (OSError, ValueError, KeyError, TypeError, StopIteration, MetadataError):
        pass
    return False


def finish_run(pipeline: Pipeline, cfg: Config, run_id: str, metadata: Metadata, runner: Runner, status: str,
               error: str | None) -> dict[str, Any]:
    """Writes the run's summary, sets its status in the store (`running` while steps of it remain) and
    writes its report."""
    run_dir = Path(cfg.root) / "runs" / run_id
    failpoint("run.summary")
    unrecorded = _unrecorded(pipeline, cfg, metadata)
    with deferred():  # a signal now waits until the summary and the store agree on how the run ended
        summary = summarize(pipeline, run_id, cfg, runner, status, error) | unrecorded
        write_json(run_dir / "summary.json", summary)
        failpoint("run.summarized")  # the summary says how it ended; the store still says running
        try:
            metadata.finish_run(status, error, summary["report"])
        except MetadataError as exc:
            # The summary and the report are still the run's record: a store that cannot take the run's end
            # fails the run, and the next run reads how it ended from its summary (`Metadata.start_run`).
            # A store that failed mid-run fails here again the same way: its message (which may go on to say
            # which output it did not record) is said once.
            same = bool(error) and error.startswith(str(exc))
            status, error = "failed", (error if same else f"{exc}" + (f"; before that: {error}" if error else "")) + (
                f"; {summary['push']['uri']} serves: the next run records it" if summary.get("push") else "")
            summary = summarize(pipeline, run_id, cfg, runner, status, error) | unrecorded
            write_json(run_dir / "summary.json", summary)
        settle()  # before the signals held back meanwhile are delivered: they find the records final
    failpoint("run.recorded")  # the summary and the store agree on how the run ended; the report is not written
    try:
        lineage = metadata.lineage(summary["push"]["uri"]) if summary.get("push") else None
    except MetadataError:
        lineage = None  # the report goes without it
    from pipeline.report import run_html

    run_html(pipeline, summary, runner.outputs, lineage, run_dir / "report.html")
    return summary
