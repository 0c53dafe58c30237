"""Shared by the training benchmarks: the dataset's Examples, ingested once under a pipeline root and reused."""
from __future__ import annotations

from pathlib import Path


def examples_for(dataset: str, root: str):
    """Ingests `dataset` through the pipeline's runner, so a root the pipeline already ran on is reused."""
    from components import ingest
    from components.ingest import DataConfig
    from engine.runner import Runner

    return Runner(Path(root))(ingest.COMPONENT, data=DataConfig(dataset=dataset))


class StepTimer:
    """A Keras callback timing training steps after a warm-up, for steady-state examples per second."""

    def __new__(cls, batch_size: int, warmup: int = 20):
        import time

        import keras

        class Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.marks = []

            def on_train_batch_end(self, batch, logs=None):
                self.marks.append((batch, time.perf_counter()))  # batch: last step of the execution

            def examples_per_second(self) -> float:
                timed = [(b, t) for b, t in self.marks if b >= warmup]
                (b0, t0), (b1, t1) = timed[0], timed[-1]
                return (b1 - b0) * batch_size / (t1 - t0)

        return Timer()
