"""Benchmark: the training input alone against a naive tf.data pipeline and against what training consumes.

    python benchmarks/input_pipeline.py [--dataset fashion_mnist] [--root pipeline_root]

Prints one JSON object. `ratio` is the project's input rate over the trainer's consumption rate
(examples/s of the reference model's train steps on in-memory batches); the target is at least 10.
`ratio_vs_naive` compares with TFRecord → per-example parse → batch, without parallelism, cache or
prefetch, over the same files. Input rates are for one pass after the first (the cached steady state),
and the first pass is reported too.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
BATCH = 128


def _rate(dataset) -> float:
    start, count = time.perf_counter(), 0
    for images, _ in dataset:
        count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--root", default="pipeline_root")
    args = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    import keras
    import numpy as np
    import tensorflow as tf

    from benchmarks._examples import StepTimer, examples_for
    from components.cnn import CLASSES, REFERENCE, build_model
    from components.inputs import FEATURES, make_dataset

    examples = examples_for(args.dataset, args.root)
    pattern = examples.file_pattern("train")
    project = make_dataset(pattern, BATCH, shuffle=True, seed=1, shuffle_buffer=examples.counts["train"])
    project_first = _rate(project)
    project_steady = _rate(project)

    def parse_one(serialized):
        parsed = tf.io.parse_single_example(serialized, FEATURES)
        return tf.cast(parsed["image"], tf.uint8), tf.one_hot(parsed["label"][0], CLASSES)

    naive = tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(pattern)), compression_type="GZIP")
    naive = naive.map(parse_one).batch(BATCH)
    naive_rate = _rate(naive)

    # What training consumes: train steps of the reference model on batches already in memory.
    x = np.random.default_rng(0).integers(0, 256, (BATCH * 64, 28 * 28), dtype=np.uint8)
    y = keras.utils.to_categorical(np.arange(len(x)) % CLASSES, CLASSES)
    model, timer = build_model(REFERENCE), StepTimer(BATCH, warmup=10)
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).cache().repeat(), steps_per_epoch=200,
              epochs=1, callbacks=[timer], verbose=0)
    consumption = timer.examples_per_second()
    print(json.dumps({
        "benchmark": "input_pipeline",
        "dataset": args.dataset,
        "examples": examples.counts["train"],
        "batch_size": BATCH,
        "input_examples_per_second": round(project_steady),
        "input_first_pass_examples_per_second": round(project_first),
        "naive_examples_per_second": round(naive_rate),
        "training_consumes_examples_per_second": round(consumption),
        "ratio": round(project_steady / consumption, 2),
        "ratio_first_pass": round(project_first / consumption, 2),
        "ratio_vs_naive": round(project_steady / naive_rate, 2),
        "target_ratio_at_least": 10,
    }))


if __name__ == "__main__":
    main()
