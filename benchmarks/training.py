"""Benchmark: training throughput fed by the project's input against the user's `model.fit` on numpy arrays.

    python benchmarks/training.py [--dataset fashion_mnist] [--root pipeline_root] [--steps 200]

Prints one JSON object. `ratio` is the trainer's steady-state examples/s (the reference model built by
the project, fed by `components.inputs.make_dataset`) over the user's original approach: the same
reference layers on float32 numpy arrays scaled in numpy, `model.fit(x, y, batch_size=128)`; target at
least 1.0. The `variants` are the CPU settings tried on the project's trainer: `steps_per_execution`
(several steps per tf.function call), XLA `jit_compile` and Keras's `mixed_bfloat16` policy (bfloat16
compute, float32 weights; CPUs with AVX-512 BF16 run it natively), each with its ratio to the plain
trainer.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
BATCH = 128
# Settings fixed when TensorFlow starts, each measured in a process of its own: environment, (intra, inter) threads.
CHILD_VARIANTS = {"onednn_off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, None),
                  "threads_intra_2_inter_1": ({}, (2, 1)),
                  "threads_intra_1_inter_2": ({}, (1, 2))}


def _users_model():
    """The reference model as the user wrote it: float images [28, 28, 1] in, scaled beforehand."""
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2), layers.Dropout(0.2),
        layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2), layers.Dropout(0.2),
        layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--root", default="pipeline_root")
    parser.add_argument("--steps", type=int, default=200, help="timed training steps per variant")
    parser.add_argument("--child", choices=sorted(CHILD_VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _, threads = CHILD_VARIANTS[args.child]
        if threads:  # only possible before TensorFlow runs anything, hence a process of its own
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(threads[0])
            tf.config.threading.set_inter_op_parallelism_threads(threads[1])
    import warnings

    warnings.filterwarnings("ignore")
    import keras
    import numpy as np
    import tensorflow as tf

    from benchmarks._examples import StepTimer, examples_for
    from components.cnn import REFERENCE, build_model
    from components.inputs import make_dataset, split_arrays

    examples = examples_for(args.dataset, args.root)
    steps = args.steps + 20  # the first 20 steps (tracing, cache fill) are not timed

    def project(policy: str | None = None, **compile_options) -> float:
        keras.utils.set_random_seed(1)
        if policy:
            keras.mixed_precision.set_global_policy(policy)
        model = build_model(REFERENCE)
        if compile_options:
            model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="categorical_crossentropy",
                          metrics=["accuracy"], **compile_options)
        data = make_dataset(examples.file_pattern("train"), BATCH, shuffle=True, seed=1,
                            shuffle_buffer=examples.counts["train"]).repeat()
        timer = StepTimer(BATCH)
        model.fit(data, steps_per_epoch=steps, epochs=1, callbacks=[timer], verbose=0)
        keras.mixed_precision.set_global_policy("float32")
        return timer.examples_per_second()

    if args.child:
        print(json.dumps(project()))
        return

    # The user's arrays: every train image, parsed once into numpy, scaled and reshaped in numpy.
    images, labels = split_arrays(examples.file_pattern("train"))
    x = (images.astype("float32") / 255.0).reshape(-1, 28, 28, 1)
    y = np.eye(10, dtype="float32")[labels]
    keras.utils.set_random_seed(1)
    timer = StepTimer(BATCH)
    _users_model().fit(x, y, batch_size=BATCH, epochs=1, steps_per_epoch=min(steps, len(x) // BATCH),
                       callbacks=[timer], verbose=0)
    users = timer.examples_per_second()
    plain = project()
    variants = {"steps_per_execution_16": project(steps_per_execution=16),
                "jit_compile": project(jit_compile=True),
                "mixed_bfloat16": project("mixed_bfloat16"),
                "mixed_bfloat16_steps_per_execution_16": project("mixed_bfloat16", steps_per_execution=16)}
    for name, (env, _) in CHILD_VARIANTS.items():
        done = subprocess.run([sys.executable, __file__, "--dataset", args.dataset, "--root", args.root, "--steps",
                               str(args.steps), "--child", name], env={**os.environ, **env}, capture_output=True,
                              text=True, check=True)
        variants[name] = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps({
        "benchmark": "training",
        "dataset": args.dataset,
        "batch_size": BATCH,
        "timed_steps": args.steps,
        "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
                    "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count()},
        "users_numpy_fit_examples_per_second": round(users),
        "trainer_examples_per_second": round(plain),
        "ratio": round(plain / users, 3),
        "target_ratio_at_least": 1.5,
        "variants": {name: {"examples_per_second": round(rate), "ratio_to_trainer": round(rate / plain, 3)}
                     for name, rate in variants.items()},
    }))


if __name__ == "__main__":
    main()
