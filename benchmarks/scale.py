"""Benchmark: ingest and statistics of up to 1,000,000 images, peak memory and time per image by size; prints JSON.

    python benchmarks/scale.py [--sizes 70000 250000 1000000] [--root DIR] [--beam-arg ARG ...]

For each size N it writes an IDX directory of N images (a single `train-` pair, so ingest carves test
and eval by hash): Fashion-MNIST's 70,000 images (train then test) repeated, copy k (k >= 1) with the
lowest bit of pixel k - 1 flipped so that no copy is byte-identical to another and each lands in a
split by its own hash. The files are streamed to disk a chunk at a time. Then, in a child process per
size, it runs the pipeline's own CLI, `python -m pipeline run --dataset idx:DIR --root ROOT --to
statistics --json`, on a fresh root. Per size: examples/s of ingest and of statistics from the run
summary's per-component seconds, and the child's peak resident memory (`os.wait4`: the child's own
peak or that of any process it waited for, Beam workers included). `rss_ratio` is the peak at the
largest size over that at the smallest (target <= 1.5); `seconds_per_image_ratio` the same for each
component's seconds per image (linear time is 1, fixed costs such as imports push it below), and with three
sizes or more `marginal_seconds_per_image_ratio` the seconds each added image costs between the two largest
sizes over that between the two smallest. The data and roots are deleted after each size.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist")
CHUNK = 10_000  # images generated and written at a time
MAX_RSS_RATIO = 1.5


def _read(name: str, offset: int) -> np.ndarray:
    with gzip.open(FASHION / name, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def write_dataset(directory: Path, size: int) -> None:
    """Writes `size` perturbed repeats of Fashion-MNIST as gzipped IDX images and labels, a chunk at a time."""
    images = np.concatenate([_read(f"{p}-images-idx3-ubyte.gz", 16) for p in ("train", "t10k")]).reshape(-1, 784)
    labels = np.concatenate([_read(f"{p}-labels-idx1-ubyte.gz", 8) for p in ("train", "t10k")])
    directory.mkdir(parents=True)
    # Level 1: the files are read, not kept; decompression costs ingest about the same at any level.
    with gzip.open(directory / "train-images-idx3-ubyte.gz", "wb", compresslevel=1) as out_images, \
            gzip.open(directory / "train-labels-idx1-ubyte.gz", "wb", compresslevel=1) as out_labels:
        out_images.write(struct.pack(">4I", 0x803, size, 28, 28))
        out_labels.write(struct.pack(">2I", 0x801, size))
        for start in range(0, size, CHUNK):
            index = np.arange(start, min(size, start + CHUNK))
            source, copy = index % len(images), index // len(images)
            chunk = images[source]
            flipped = copy > 0
            chunk[flipped, (copy[flipped] - 1) % 784] ^= 1
            out_images.write(chunk.tobytes())
            out_labels.write(labels[source].tobytes())


def run_pipeline(data: Path, root: Path, beam_args: list[str]) -> tuple[dict, float, float]:
    """Ingest and statistics through the CLI in a child process: its summary, peak RSS (MB) and wall seconds."""
    command = [sys.executable, "-m", "pipeline", "run", "--dataset", f"idx:{data}", "--root", str(root),
               "--to", "statistics", "--json", *(f"--beam-arg={arg}" for arg in beam_args)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=errors)
        out = proc.stdout.read()
        # wait4, not wait: its usage is this child's, with the peak of every process the child waited for.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            errors.seek(0)
            raise SystemExit(f"pipeline run on {data} exited {proc.returncode}: "
                             f"{errors.read().decode(errors='replace').strip().splitlines()[-1:]}")
    return json.loads(out), usage.ru_maxrss / 1024, seconds


def measure(size: int, scratch: Path, beam_args: list[str]) -> dict:
    """Generates the data of one size, runs the pipeline on it and returns its figures."""
    data, root = scratch / f"idx-{size}", scratch / f"root-{size}"
    start = time.perf_counter()
    write_dataset(data, size)
    generate_seconds = time.perf_counter() - start
    load = os.getloadavg()[0]
    try:
        summary, rss_mb, wall = run_pipeline(data, root, beam_args)
    finally:
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    counts = summary["dataset"]["counts"]
    examples = sum(counts.values())
    seconds = {name: summary["components"][name]["seconds"] for name in ("ingest", "statistics")}
    return {"images": size, "examples": examples, "counts": counts,
            "ingest_seconds": seconds["ingest"], "statistics_seconds": seconds["statistics"],
            "ingest_examples_per_second": round(examples / seconds["ingest"]),
            "statistics_examples_per_second": round(examples / seconds["statistics"]),
            "peak_rss_mb": round(rss_mb, 1), "wall_seconds": round(wall, 1),
            "generate_seconds": round(generate_seconds, 1), "load_before": round(load, 2),
            "load_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[70_000, 250_000, 1_000_000])
    parser.add_argument("--root", help="scratch directory for the data and the roots (default: a temporary one)")
    parser.add_argument("--beam-arg", action="append", default=[])
    args = parser.parse_args()
    sizes = sorted(args.sizes)
    scratch = Path(args.root or tempfile.mkdtemp(prefix="scale-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        runs = [measure(size, scratch, args.beam_arg) for size in sizes]
    finally:
        if not args.root:
            shutil.rmtree(scratch, ignore_errors=True)
    first, last = runs[0], runs[-1]

    def per_image_ratio(name: str) -> float:
        return round((last[f"{name}_seconds"] / last["examples"]) / (first[f"{name}_seconds"] / first["examples"]), 3)

    def marginal_ratio(name: str) -> float | None:
        """Seconds per image added between the two largest sizes over that between the two smallest: fixed costs
        (imports, Beam's start) cancel out, and linear time is 1."""
        if len(runs) < 3:
            return None
        (a, b), (c, d) = runs[:2], runs[-2:]
        slope = [(y[f"{name}_seconds"] - x[f"{name}_seconds"]) / (y["examples"] - x["examples"])
                 for x, y in ((a, b), (c, d))]
        return round(slope[1] / slope[0], 3)

    rss_ratio = round(last["peak_rss_mb"] / first["peak_rss_mb"], 3)
    print(json.dumps({
        "benchmark": "scale",
        "sizes": sizes,
        "runs": runs,
        "rss_ratio": rss_ratio,
        "rss_ratio_target_at_most": MAX_RSS_RATIO,
        "flat_memory": rss_ratio <= MAX_RSS_RATIO,
        "seconds_per_image_ratio": {name: per_image_ratio(name) for name in ("ingest", "statistics")},
        "marginal_seconds_per_image_ratio": {name: marginal_ratio(name) for name in ("ingest", "statistics")},
        "beam_args": args.beam_arg,
        "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
