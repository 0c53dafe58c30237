"""Crash harness: SIGKILL `python -m pipeline run` at random failpoints, check what survives, then finish the run.

    python tests/crash_harness.py --dataset fashion_mnist --root DIR --kills 3 [--seed N]
                                  [--phases statistics,epoch,push] [-- RUN FLAGS]

Each attempt starts the same command, picks a phase that has not finished yet (ingest, statistics,
a tuning trial, training, export and push) and one of its failpoints at random (`PHASES`), holds the
run there and kills its process group with SIGKILL. No delay is timed, so a kill lands in the phase
it aims at on a fast machine as on a slow one. After every kill and at the end it checks the
invariants (`check_invariants`); the final attempt runs to completion. Prints a JSON report.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# phase: the failpoints (`engine.failpoints`) a kill aimed at it may hold the run at, one picked at
# random. The kill lands exactly there, whatever the machine's speed; the phase's own component's
# `.committed` failpoint (its output renamed into place, not yet recorded) backs each up, so a pick the
# run no longer reaches (e.g. a trial's start once every trial is done) still stops it inside the phase.
PHASES = {
    "ingest": ("ingest.start", "ingest.split", "ingest.split#2", "ingest.commit", "ingest.committed"),
    "statistics": ("statistics.start", "statistics.commit", "statistics.committed"),
    "tune": ("tune.start", "trial.start", "trial.end", "tune.trial_end", "tune.commit", "tune.committed"),
    "train": ("train.start", "train.epoch_end", "train.epoch_end#2", "train.epoch_begin#2", "train.commit",
              "train.committed"),
    "push": ("push.start", "push.staged", "push.checked", "push.renamed", "push.commit", "push.committed"),
    "epoch": ("train.epoch_begin#2",),  # training after its first epoch's backup (not in the default walk)
    # Every component committed: the run's own record (summary, then the store's run status) is left.
    "record": ("run.summary", "run.summarized"),
}
COMPONENT_OF = {"epoch": "train"}
WALK = ("ingest", "statistics", "tune", "train", "push")


@dataclass
class Attempt:
    phase: str | None
    killed: bool
    seconds: float
    log: str
    failpoint: str | None = None  # where the kill held the run
    committed_before: dict[str, int] = field(default_factory=dict)

    @property
    def died_in(self) -> str | None:
        """The component the kill interrupted: the first one this attempt did not finish."""
        done = set(re.findall(r"^(\w+)\s+(?:executed|cached)\s", self.log, re.M))
        from pipeline.definition import PRODUCTION

        return next((c for c in PRODUCTION.order if c not in done), None) if self.killed else None


def committed(root: Path) -> dict[str, int]:
    """Committed outputs per component (directories holding their record)."""
    store = root / "artifacts"
    # Not the `.tmp-`/`.stale-`/`.work` entries beside them: pathlib's glob matches dot-names too.
    return {d.name: sum(not r.parent.name.startswith(".") for r in d.glob("*/artifact.json"))
            for d in store.iterdir()} if store.is_dir() else {}


def check_invariants(root: Path, serving: Path) -> list[str]:
    """What is wrong after a kill: a partial serving version, an unreadable metadata store, or a LIVE
    artifact whose files are missing. Empty when all holds."""
    from pipeline.config import Config, override
    from engine.errors import MetadataError
    from engine.metadata import Metadata

    problems = []
    if serving.is_dir():
        for version in serving.iterdir():
            if version.name.startswith("."):
                continue  # staging of a killed push: never a version, removed by the next push
            needed = ("saved_model.pb", "model_info.json", "variables/variables.index", "model.keras")
            missing = [n for n in needed if not (version / n).is_file()]
            if not version.name.isdigit() or missing:
                problems.append(f"serving entry {version.name} is not a complete version (missing {missing})")
    if (root / "metadata.sqlite").exists():
        try:
            live = Metadata.open(override(Config(), root=str(root)), create=False).live_artifacts()
        except MetadataError as exc:
            return problems + [str(exc)]
        from engine.runner import Runner

        for artifact in live:
            uri = Path(artifact["uri"])
            if artifact["type"] == "PushedModel":
                if not (uri / "saved_model.pb").is_file():
                    problems.append(f"LIVE PushedModel {uri} has no saved_model.pb")
                continue
            found, why = Runner.cached(uri)  # every file its record lists, with its size and SHA-256
            if found is None:
                problems.append(f"LIVE {artifact['type']} {uri} {why or 'has no record'}")
    return problems


def leftovers(root: Path, serving: Path) -> list[str]:
    """What killed processes left that a finished run should have removed: `.tmp-`/`.stale-` outputs,
    push staging, and work directories of committed outputs."""
    found = [p for p in (root / "artifacts").glob("*/.*") if ".tmp-" in p.name or ".stale-" in p.name
             or (p.name.endswith(".work") and (p.parent / p.name[1:-len(".work")] / "artifact.json").is_file())]
    found += list(serving.glob(".staging-*")) if serving.is_dir() else []
    return [f"left behind: {p.relative_to(root.parent)}" for p in found]


def _attempt(command: list[str], log_path: Path, phase: str | None, rng: random.Random,
             timeout: float) -> Attempt:
    """Runs `command`; with a phase, holds it at one of the phase's failpoints and kills its process group."""
    from engine.failpoints import ENV, REACHED

    start = time.monotonic()
    reached = log_path.with_suffix(".reached")
    reached.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in (ENV, REACHED)}
    point = None
    if phase:
        point = rng.choice(PHASES[phase])
        backup = "run.summarized" if phase == "record" else f"{COMPONENT_OF.get(phase, phase)}.committed"
        env |= {ENV: f"{point},{backup}", REACHED: str(reached)}
    with open(log_path, "w") as log:
        log.write(f"# failpoint {point}\n" if point else "")
        log.flush()
        proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
                                env=env)
    killed = False
    while proc.poll() is None and time.monotonic() - start < timeout:
        time.sleep(0.05)
        if phase and reached.is_file():
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group, as a machine crash would
            proc.wait()
            killed = True
            break
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        raise TimeoutError(f"run did not finish within {timeout} s; log {log_path}")
    held = reached.read_text().split()[0] if killed else None
    return Attempt(phase, killed, round(time.monotonic() - start, 1), log_path.read_text(errors="replace"), held)


def crash_and_finish(dataset: str, root: Path, flags: list[str], kills: int, seed: int,
                     timeout: float = 1800, walk: tuple[str, ...] = WALK) -> dict:
    """Kills the run `kills` times at random failpoints, checking invariants after each, then completes it.

    The first kills take the phases of `walk` in turn; later ones any phase not finished yet.

    Returns the report: attempts (phase, killed, seconds), problems found (expected empty), and the
    final summary. Raises AssertionError when an invariant breaks, with what broke.
    """
    rng = random.Random(seed)
    serving = root / "serving"
    command = [sys.executable, "-m", "pipeline", "run", "--dataset", dataset, "--root", str(root), *flags, "--json"]
    attempts: list[Attempt] = []
    logs = root.parent / f"{root.name}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    while sum(a.killed for a in attempts) < kills:
        before = committed(root)
        unfinished = [p for p in walk if not before.get(COMPONENT_OF.get(p, p))] or ["record"]
        # The first kills walk the phases in order, so each is hit; then any phase still ahead.
        ordered = walk[len(attempts)] if len(attempts) < len(walk) else None
        phase = ordered if ordered in unfinished else rng.choice(unfinished)
        attempt = _attempt(command, logs / f"attempt-{len(attempts)}.log", phase, rng, timeout)
        attempt.committed_before = before
        attempts.append(attempt)
        after = committed(root)
        lost = {c: n for c, n in before.items() if after.get(c, 0) < n}
        assert not lost, f"attempt {len(attempts)}: committed outputs disappeared: {lost}"
        problems = check_invariants(root, serving)
        assert not problems, f"after kill {len(attempts)} in {phase}: {problems}"
        assert attempt.killed, f"attempt {len(attempts)} ran to the end before its kill in {phase}"
    before = committed(root)
    final = _attempt(command, logs / "final.log", None, rng, timeout)
    final.committed_before = before
    attempts.append(final)
    problems = check_invariants(root, serving) + leftovers(root, serving)
    summary_path = sorted((root / "runs").glob("*/summary.json"))[-1]
    summary = json.loads(summary_path.read_text())
    return {"attempts": [{"phase": a.phase, "failpoint": a.failpoint, "killed": a.killed, "died_in": a.died_in,
                          "seconds": a.seconds}
                         for a in attempts],
            "kills": sum(a.killed for a in attempts), "problems": problems, "status": summary["status"],
            "summary": summary, "logs": [a.log for a in attempts], "committed_before": [a.committed_before
                                                                                      for a in attempts],
            "accuracy": (summary.get("evaluation") or {}).get("accuracy"),
            "pushed": (summary.get("push") or {}).get("uri")}


def reran_finished_work(report: dict) -> list[str]:
    """Components executed again although an earlier attempt had committed their output, trials completed
    twice, and epochs trained more often than the kills during training explain. Empty when all was reused."""
    problems, trials, epochs = [], {}, {}
    for i, (log, before) in enumerate(zip(report["logs"], report["committed_before"])):
        for name, state in re.findall(r"^(\w+)\s+(executed|cached)\s", log, re.M):
            if state == "executed" and before.get(name):
                problems.append(f"attempt {i}: {name} executed again although its output was committed")
        for trial in re.findall(r"^  trial (\S+) completed", log, re.M):
            trials[trial] = trials.get(trial, 0) + 1
        for epoch in re.findall(r"^  epoch (\d+)/", log, re.M):
            epochs[epoch] = epochs.get(epoch, 0) + 1
    problems += [f"trial {t} completed {n} times" for t, n in trials.items() if n > 1]
    train_kills = sum(1 for a in report["attempts"] if a["killed"] and a["died_in"] == "train")
    redone = sum(n - 1 for n in epochs.values())
    if redone > train_kills:  # a kill between an epoch's log line and its backup redoes that one epoch
        problems.append(f"{redone} epochs trained again, more than the {train_kills} kills during training")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--root", required=True, help="a new pipeline root")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phases", default=",".join(WALK),
                        help=f"the phases the first kills take in turn, from {', '.join(PHASES)}")
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="run flags after --")
    args = parser.parse_args()
    flags = [f for f in args.flags if f != "--"] or ["--no-tune", "--epochs", "2"]
    report = crash_and_finish(args.dataset, Path(args.root), flags, args.kills, args.seed,
                              walk=tuple(args.phases.split(",")))
    rerun = reran_finished_work(report)
    print(json.dumps({k: v for k, v in report.items() if k not in ("logs", "summary", "committed_before")}
                     | {"reran": rerun, "ok": not report["problems"] and not rerun and report["status"] == "pushed"},
                     indent=2))


if __name__ == "__main__":
    main()
