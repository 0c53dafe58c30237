"""Benchmark: ingest's tf.Example encoding, tfx_bsl's C++ encoder against a Python loop; prints JSON.

    python benchmarks/ingest.py [--dataset fashion_mnist] [--repeats 3]

Both sides encode the same images, labels and summary features of the dataset's train split (read
once, decoded, in memory), one after the other in one process, best of `--repeats`. `python_loop`
builds each tf.Example in Python, as ingest did before; `tfx_bsl` is `components.tfrecords.encode_examples`
(an Arrow record batch through `RecordBatchToExamples`). `ratio` is python_loop seconds over tfx_bsl
seconds; `same_examples` checks that every example parses equal. `write_split_seconds` is the whole
write of the split (summaries, encoding, gzipped TFRecord shards) as ingest does it now.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def python_loop(images: np.ndarray, labels: np.ndarray, summaries: dict[str, np.ndarray]) -> list[bytes]:
    """The former encoder: one tf.train.Example built per image in Python."""
    import tensorflow as tf

    Feature, Int64List, FloatList = tf.train.Feature, tf.train.Int64List, tf.train.FloatList
    flat, out = images.reshape(len(images), -1), []
    for i in range(len(flat)):
        feature = {"image": Feature(int64_list=Int64List(value=flat[i].tolist())),
                   "label": Feature(int64_list=Int64List(value=[int(labels[i])]))}
        for name, values in summaries.items():
            feature[name] = Feature(float_list=FloatList(value=[float(values[i])]))
        out.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return out


def best_of(repeats: int, fn, *args) -> tuple[float, object]:
    seconds, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        seconds = min(seconds, time.perf_counter() - start)
    return seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import tensorflow as tf

    from components import image_features
    from components.ingest import DatasetSpec
    from components.tfrecords import encode_examples, write_split

    loaded = DatasetSpec.parse(args.dataset).load()
    split = loaded.splits.get("train") or loaded.splits["all"]
    [(images, labels)] = split.chunks(split.count)  # the whole split at once: the encoders are compared in memory
    summaries = image_features.summarize(images)
    loop_seconds, expected = best_of(args.repeats, python_loop, images, labels, summaries)
    bsl_seconds, encoded = best_of(args.repeats, encode_examples, images, labels, summaries)
    same = len(expected) == len(encoded) and all(
        tf.train.Example.FromString(a) == tf.train.Example.FromString(b) for a, b in zip(expected, encoded))
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        write_split([(images, labels)], len(images), Path(scratch) / "train")
        write_seconds = time.perf_counter() - start
    print(json.dumps({"dataset": args.dataset, "examples": len(images), "repeats": args.repeats,
                      "python_loop_seconds": round(loop_seconds, 3), "tfx_bsl_seconds": round(bsl_seconds, 3),
                      "ratio": round(loop_seconds / bsl_seconds, 2), "same_examples": bool(same),
                      "write_split_seconds": round(write_seconds, 3), "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
