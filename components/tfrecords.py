"""Examples as files: gzipped tf.Example TFRecord shards of images, labels and their summary features."""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Iterable

import numpy as np

from components import image_features
from engine.progress import Bar

SHARD_SIZE = 20_000


def encode_examples(images: np.ndarray, labels: np.ndarray | None, summaries: dict[str, np.ndarray]) -> list[bytes]:
    """Serialized tf.Examples of `image` (pixels, int64), `label` (int64; none for unlabeled images) and one
    float per summary feature, encoded in C++ by tfx_bsl from an Arrow record batch (benchmarks/ingest.py:
    the same bytes' examples, several times faster than building each tf.Example in Python).
    """
    import pyarrow as pa
    from tfx_bsl.coders import example_coder

    count = len(images)

    def lists(values: np.ndarray, width: int) -> pa.Array:
        return pa.ListArray.from_arrays(pa.array(np.arange(0, count * width + 1, width, dtype=np.int32)),
                                        pa.array(values.reshape(-1)))

    columns = {"image": lists(images.reshape(count, -1).astype(np.int64), images[0].size if count else 0)}
    if labels is not None:
        columns["label"] = lists(np.asarray(labels, np.int64), 1)
    for name, values in summaries.items():
        columns[name] = lists(np.asarray(values, np.float32), 1)
    return example_coder.RecordBatchToExamples(pa.RecordBatch.from_arrays(list(columns.values()), list(columns)))


def write_split(chunks: Iterable[tuple[np.ndarray, np.ndarray | None]], count: int, directory: Path) -> None:
    """Writes `count` examples (see `encode_examples`), given as chunks of images and labels, as gzipped TFRecord
    shards `data-NNNNN-of-NNNNN.tfrecord.gz`; example i goes to shard i mod shards. Every shard is open at once,
    so that a chunk is written and dropped: memory holds one chunk and a writer's buffers per shard."""
    import tensorflow as tf

    directory.mkdir(parents=True)
    shards = max(1, math.ceil(count / SHARD_SIZE))
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    bar = Bar(f"ingest {directory.name}", total=count, unit="examples")
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(tf.io.TFRecordWriter(
            str(directory / f"data-{shard:05d}-of-{shards:05d}.tfrecord.gz"), options)) for shard in range(shards)]
        done = 0
        for images, labels in chunks:
            if not len(images):  # an empty split's one chunk: its shard stays empty
                continue
            for i, record in enumerate(encode_examples(images, labels, image_features.summarize(images))):
                writers[(done + i) % shards].write(record)
            done += len(images)
            bar.update(len(images))
    bar.close()
