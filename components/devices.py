"""The devices a search's trials and the final training run on: tf.distribute strategy, mixed precision, input device."""
from __future__ import annotations


def distribution_strategy(kind: str = "auto"):
    """The tf.distribute strategy for `train.distribute`.

    auto: MirroredStrategy over all GPUs when there are two or more, else the default strategy.
    mirrored: MirroredStrategy over all GPUs, or over all logical CPU devices when there is no GPU
    (how the multi-device path is tested on CPU). none: the default strategy.
    """
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if kind == "mirrored":
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if kind == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def mixed_precision_enabled(setting: str = "auto") -> bool:
    """Whether to compute in float16: `on`, `off`, or `auto` (only when a GPU is present)."""
    import tensorflow as tf

    return setting == "on" or (setting == "auto" and bool(tf.config.list_logical_devices("GPU")))


def input_device(strategy) -> str | None:
    """The device to prefetch batches into: the one GPU of a single-replica run, else none.

    Under a multi-replica strategy Keras distributes the batches itself.
    """
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name if gpus and strategy.num_replicas_in_sync == 1 else None
