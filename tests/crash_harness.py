"""Crash harness: SIGKILL `python -m pipeline run` at random moments, check what survives, then finish the run.

    python tests/crash_harness.py --dataset fashion_mnist --root DIR --kills 3 [--seed N]
                                  [--phases statistics,epoch,push] [--delay-scale 5] [-- RUN FLAGS]

Each attempt starts the same command, picks a phase that has not finished yet (ingest, statistics,
a tuning trial, training, export and push) and kills the process group with SIGKILL at a random
moment inside it. After every kill and at the end it checks the invariants (`check_invariants`);
the final attempt runs to completion. Prints a JSON report.
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
# phase: (the log line after which it is under way, random seconds after it before the kill). The
# delays are shorter than the phases on tiny data, so a kill lands in its phase or the next one, and
# an attempt never runs to the end before its kill.
PHASES = {
    "ingest": (None, (1.0, 4.0)),  # from the start: imports, then reading and writing the splits
    "statistics": (r"^ingest\s+(executed|cached)", (0.0, 3.0)),
    "tune": (r"^validate\s+(executed|cached)", (0.5, 8.0)),
    "train": (r"^tune\s+(executed|cached)", (0.5, 2.5)),  # model build, then the epochs
    "push": (r"^evaluate\s+(executed|cached)", (0.0, 3.0)),  # export, the infra check's process, rename
    "epoch": (r"^  epoch 1/", (0.5, 2.5)),  # training after its first epoch's backup (not in the default walk)
}
WALK = ("ingest", "statistics", "tune", "train", "push")
ORDER = ("ingest", "statistics", "schema", "validate", "tune", "train", "evaluate", "push")


@dataclass
class Attempt:
    phase: str | None
    killed: bool
    seconds: float
    log: str
    committed_before: dict[str, int] = field(default_factory=dict)

    @property
    def died_in(self) -> str | None:
        """The component the kill interrupted: the first one this attempt did not finish."""
        done = set(re.findall(r"^(\w+)\s+(?:executed|cached)\s", self.log, re.M))
        return next((c for c in ORDER if c not in done), None) if self.killed else None


def committed(root: Path) -> dict[str, int]:
    """Committed outputs per component (directories holding their record)."""
    store = root / "artifacts"
    return {d.name: len(list(d.glob("*/artifact.json"))) for d in store.iterdir()} if store.is_dir() else {}


def check_invariants(root: Path, serving: Path) -> list[str]:
    """What is wrong after a kill: a partial serving version, an unreadable metadata store, or a LIVE
    artifact whose files are missing. Empty when all holds."""
    from pipeline.config import Config, override
    from pipeline.errors import MetadataError
    from pipeline.metadata import Metadata

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
        for artifact in live:
            uri = Path(artifact["uri"])
            marker = uri / ("saved_model.pb" if artifact["type"] == "PushedModel" else "artifact.json")
            if not marker.is_file():
                problems.append(f"LIVE {artifact['type']} {uri} has no {marker.name}")
    return problems


def _attempt(command: list[str], log_path: Path, phase: str | None, rng: random.Random, timeout: float,
             scale: float = 1.0) -> Attempt:
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    trigger, (low, high) = PHASES[phase] if phase else (None, (0, 0))
    low, high = low * scale, high * scale
    kill_at = start + rng.uniform(low, high) if phase and trigger is None else None
    killed = False
    while proc.poll() is None and time.monotonic() - start < timeout:
        time.sleep(0.05)
        if phase is None:
            continue
        if kill_at is None and re.search(trigger, log_path.read_text(errors="replace"), re.M):
            kill_at = time.monotonic() + rng.uniform(low, high)
        if kill_at is not None and time.monotonic() >= kill_at:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group, as a machine crash would
            proc.wait()
            killed = True
            break
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        raise TimeoutError(f"run did not finish within {timeout} s; log {log_path}")
    return Attempt(phase, killed, round(time.monotonic() - start, 1), log_path.read_text(errors="replace"))


def crash_and_finish(dataset: str, root: Path, flags: list[str], kills: int, seed: int,
                     timeout: float = 1800, walk: tuple[str, ...] = WALK, scale: float = 1.0) -> dict:
    """Kills the run `kills` times at random moments, checking invariants after each, then completes it.

    The first kills take the phases of `walk` in turn; later ones any phase not finished yet. `scale`
    stretches the random delays, for data bigger than the tests' tiny sets.

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
        unfinished = [p for p in walk if not before.get({"epoch": "train"}.get(p, p))] or list(walk)
        # The first kills walk the phases in order, so each is hit; then any phase still ahead.
        ordered = walk[len(attempts)] if len(attempts) < len(walk) else None
        phase = ordered if ordered in unfinished else rng.choice(unfinished)
        attempt = _attempt(command, logs / f"attempt-{len(attempts)}.log", phase, rng, timeout, scale)
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
    problems = check_invariants(root, serving)
    summary_path = sorted((root / "runs").glob("*/summary.json"))[-1]
    summary = json.loads(summary_path.read_text())
    return {"attempts": [{"phase": a.phase, "killed": a.killed, "died_in": a.died_in, "seconds": a.seconds}
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
    train_kills = sum(1 for a in report["attempts"] if a["killed"] and a["phase"] == "train")
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
    parser.add_argument("--delay-scale", type=float, default=1.0, help="stretch the random kill delays")
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="run flags after --")
    args = parser.parse_args()
    flags = [f for f in args.flags if f != "--"] or ["--no-tune", "--epochs", "2"]
    report = crash_and_finish(args.dataset, Path(args.root), flags, args.kills, args.seed,
                              walk=tuple(args.phases.split(",")), scale=args.delay_scale)
    rerun = reran_finished_work(report)
    print(json.dumps({k: v for k, v in report.items() if k not in ("logs", "summary", "committed_before")}
                     | {"reran": rerun, "ok": not report["problems"] and not rerun and report["status"] == "pushed"},
                     indent=2))


if __name__ == "__main__":
    main()
