"""Benchmark: wall time of a whole pipeline run against the same command again, fully cached.

    python benchmarks/cached_rerun.py [--dataset fashion_mnist] [--root DIR] [-- RUN FLAGS...]

Runs `python -m pipeline run` twice as a user would, in fresh processes, on a new root (a temporary
directory unless `--root`), with the README quickstart's flags unless others follow `--`. Prints one
JSON object: `full_seconds`, `cached_seconds` (imports included), their `ratio`, `all_cached` (every
component of the second run's summary is `cached`), `new_artifacts` (files the second run added under
artifacts/ and serving/: expected 0) and `ok` (cached, nothing new, and under `target_seconds`, 15).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = ["--max-trials", "2", "--max-epochs", "2"]
TARGET_SECONDS = 15.0


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for d in ("artifacts", "serving") for p in (root / d).rglob("*") if p.is_file()}


def _run(dataset: str, root: Path, flags: list[str]) -> tuple[float, dict]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", "--dataset", dataset, "--root", str(root),
                           *flags, "--json"], cwd=REPO, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if not done.stdout.strip():
        sys.exit(f"run failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return seconds, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--root", help="a new pipeline root (default: a temporary directory, removed after)")
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="run flags after --")
    args = parser.parse_args()
    flags = [f for f in args.flags if f != "--"] or QUICKSTART
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.root or Path(scratch) / "root")
        full, first = _run(args.dataset, root, flags)
        before = _files(root)
        cached, second = _run(args.dataset, root, flags)
        new = sorted(_files(root) - before)
    all_cached = {c["state"] for c in second["components"].values()} == {"cached"}
    print(json.dumps({
        "dataset": args.dataset, "flags": flags, "status": [first["status"], second["status"]],
        "full_seconds": round(full, 2), "cached_seconds": round(cached, 2), "ratio": round(full / cached, 1),
        "all_cached": all_cached, "new_artifacts": len(new), "target_seconds": TARGET_SECONDS,
        "ok": all_cached and not new and cached < TARGET_SECONDS,
    }, indent=2))


if __name__ == "__main__":
    main()
