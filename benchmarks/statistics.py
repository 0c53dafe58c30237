"""Benchmark: the statistics component over Fashion-MNIST (70k) against calling TFDV directly; prints JSON.

    python benchmarks/statistics.py [--dataset fashion_mnist] [--beam-arg ARG ...]

`ratio` is the component's seconds over `generate_statistics_from_tfrecord` on the same files, one
call per split with the same StatsOptions (label categorical, fixed histograms): the cost of what
the component adds around TFDV. `ratio_default_options` compares with TFDV's default options.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--beam-arg", action="append", default=[])
    args = parser.parse_args()

    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)
    from components.ingest import ingest
    from components.statistics import statistics, stats_options
    from components.ingest import SPLITS, DataConfig
    from components.libs import load_tfdv

    tfdv = load_tfdv()
    from apache_beam.options.pipeline_options import PipelineOptions

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "examples").mkdir()
        examples = ingest(out_dir=tmp / "examples", data=DataConfig(dataset=args.dataset))

        def component():
            out = tmp / f"stats-{time.monotonic_ns()}"
            out.mkdir()
            statistics(examples, out_dir=out, beam_args=tuple(args.beam_arg))

        def direct(options):
            for split in SPLITS:
                tfdv.generate_statistics_from_tfrecord(examples.file_pattern(split), stats_options=options,
                                                       pipeline_options=PipelineOptions(args.beam_arg))

        timings = {}
        for name, fn in (("component", component), ("direct", lambda: direct(stats_options())),
                         ("direct_default_options", lambda: direct(tfdv.StatsOptions()))):
            start = time.perf_counter()
            fn()
            timings[name] = time.perf_counter() - start
    print(json.dumps({
        "benchmark": "statistics",
        "dataset": args.dataset,
        "examples": sum(examples.counts.values()),
        "seconds": round(timings["component"], 2),
        "direct_seconds": round(timings["direct"], 2),
        "direct_default_options_seconds": round(timings["direct_default_options"], 2),
        "ratio": round(timings["component"] / timings["direct"], 3),
        "ratio_default_options": round(timings["component"] / timings["direct_default_options"], 3),
        "target_ratio_at_most": 1.2,
        "beam_args": args.beam_arg,
    }))


if __name__ == "__main__":
    main()
