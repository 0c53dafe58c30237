"""The tf.data input of tuning, training and evaluation: parallel read and parse, cache, shuffle, prefetch."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from components.cnn import CLASSES, PIXELS

# Images without labels (drift and predict data) read as label -1: an all-zero one-hot row.
FEATURES = {"image": tf.io.FixedLenFeature([PIXELS], tf.int64),
            "label": tf.io.FixedLenFeature([1], tf.int64, default_value=[-1])}
PARSE_BATCH = 1024


def _parser(classes: int):
    def parse(serialized):
        parsed = tf.io.parse_example(serialized, FEATURES)
        return tf.cast(parsed["image"], tf.uint8), tf.one_hot(parsed["label"][:, 0], classes)

    return parse


def make_dataset(pattern: str, batch_size: int, *, shuffle: bool = False, seed: int | None = None,
                 shuffle_buffer: int = 60_000, deterministic: bool = True, device: str | None = None,
                 drop_remainder: bool = False, classes: int = CLASSES, limit: int | None = None,
                 shard_by_data: bool = False, shift: int = 0) -> tf.data.Dataset:
    """Batches of (uint8 images [B, 784], one-hot labels [B, classes]) from gzipped tf.Example TFRecords.

    Records are parsed vectorised in large batches once and cached as decoded uint8 tensors, so
    later epochs only shuffle, batch and prefetch. `deterministic=False` lets parallel reads and
    parses deliver out of order (faster; the seeded shuffle still applies). With `device` (e.g.
    "/gpu:0") batches are prefetched into that device's memory, overlapping the copy with compute.
    `drop_remainder` keeps only full batches: Keras 3 under a multi-replica strategy fails on a last
    batch that splits unevenly over the replicas (keras-team/keras#19246). `limit` keeps the first that
    many examples in file order (a search trial on a subset). `shard_by_data`: each worker of a multi-worker
    strategy takes its part of every batch, rather than files of its own (which may hold fewer batches).
    `shift` > 0 moves each image by up to that many pixels in each direction (augmentation), filling with 0.
    """
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {pattern}")
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP", num_parallel_reads=tf.data.AUTOTUNE)
    ds = ds.batch(PARSE_BATCH).map(_parser(classes), num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    ds = (ds.take(limit) if limit is not None else ds).cache()
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if shift:
        ds = ds.map(_shifter(shift, seed), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.autotune.enabled = True
    options.deterministic = deterministic
    if shard_by_data:
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(options)
    if device:  # must be the last transformation
        ds = ds.apply(tf.data.experimental.prefetch_to_device(device))
    return ds


def _shifter(shift: int, seed: int | None):
    """A map moving each image of a batch of flat square images by a random whole number of pixels, at most
    `shift` each way, with two gathers a batch in the input pipeline."""

    def shifted(images, labels):
        n, pixels = tf.shape(images)[0], tf.shape(images)[1]
        side = tf.cast(tf.round(tf.sqrt(tf.cast(pixels, tf.float32))), tf.int32)
        padded = tf.pad(tf.reshape(images, (n, side, side)), [[0, 0], [shift, shift], [shift, shift]])
        offsets = tf.random.uniform((n, 2), 0, 2 * shift + 1, tf.int32, seed=seed)
        rows, cols = offsets[:, :1] + tf.range(side)[None], offsets[:, 1:] + tf.range(side)[None]
        moved = tf.gather(tf.gather(padded, rows, batch_dims=1), cols, axis=2, batch_dims=1)
        return tf.reshape(moved, (n, pixels)), labels

    return shifted


def split_arrays(pattern: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The examples of a split in file order, as uint8 images [N, 784] and integer labels [N] (-1 for
    images without a label; the first `limit` only, reading no further than needed).
    """
    images, labels = [], []
    for x, y in make_dataset(pattern, 4096 if limit is None else min(limit, 4096)):
        images.append(x.numpy())
        y = y.numpy()
        labels.append(np.where(y.any(axis=1), y.argmax(axis=1), -1))
        if limit is not None and sum(map(len, labels)) >= limit:
            break
    if not images:
        return np.zeros((0, PIXELS), np.uint8), np.zeros((0,), np.int64)
    return np.concatenate(images)[:limit], np.concatenate(labels)[:limit]
