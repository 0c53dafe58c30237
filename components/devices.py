"""The devices a search's trials and the final training run on: tf.distribute strategy, mixed precision, input device."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from engine.errors import ConfigError, WorkerLost

TF_CONFIG = "TF_CONFIG"


@dataclass(frozen=True)
class Cluster:
    """The machines of a multi-worker training, from `TF_CONFIG`: every task's address and this one's."""

    tasks: tuple[tuple[str, int, str], ...]  # (type, index, address): the chief (or worker 0) first
    task: tuple[str, int]  # this process's (type, index)

    @property
    def chief(self) -> bool:
        """Whether this member evaluates and pushes: the `chief` task, or worker 0 when there is none."""
        return self.task == self.tasks[0][:2]

    @property
    def member(self) -> str:
        """This task as `type:index`, e.g. `worker:1`."""
        return f"{self.task[0]}:{self.task[1]}"

    def named(self, text: str) -> str:
        """The member a TensorFlow error names (`/job:worker/replica:0/task:1`), with its address."""
        # The task that failed, not the device the failed op ran on (this member's, also in the text).
        found = re.search(r"Task /job:(\w+)/replica:\d+/task:(\d+)", text) or \
            re.search(r"reported from /job:(\w+)/task:(\d+)", text)
        if not found:
            return "a worker"
        kind, index = found.group(1), int(found.group(2))
        address = next((a for t, i, a in self.tasks if (t, i) == (kind, index)), "?")
        return f"{kind} {index} ({address})"


def cluster() -> Cluster | None:
    """The multi-worker cluster `TF_CONFIG` describes when it holds two or more tasks, else None.

    Example:
        TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, "task": {"type": "worker",
        "index": 1}}' makes this process worker 1 of two; worker 0 is the chief.

    Raises:
        ConfigError: TF_CONFIG is not JSON of that shape, or its task is not in its cluster.
    """
    text = os.environ.get(TF_CONFIG)
    if not text:
        return None
    try:
        config = json.loads(text)
        spec, task = config["cluster"], config.get("task", {})
        tasks = tuple((kind, i, str(address)) for kind in sorted(spec, key=lambda k: (k != "chief", k))
                      for i, address in enumerate(spec[kind]))
        this = (str(task["type"]), int(task["index"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{TF_CONFIG}: expected JSON {{\"cluster\": {{\"worker\": [\"host:port\", ...]}}, \"task\": "
                          f"{{\"type\": \"worker\", \"index\": N}}}}, got {text[:80]!r} "
                          f"({type(exc).__name__})") from None
    others = sorted({kind for kind, _, _ in tasks} - {"chief", "worker"})
    if others:
        raise ConfigError(f"{TF_CONFIG}: task type {others[0]!r} in its cluster; expected only chief and worker tasks "
                          "(MultiWorkerMirroredStrategy)")
    if len(tasks) < 2:
        return None
    if this not in [t[:2] for t in tasks]:
        raise ConfigError(f"{TF_CONFIG}: task {this[0]} {this[1]} is not in its cluster "
                          f"({', '.join(f'{t} {i}' for t, i, _ in tasks)})")
    return Cluster(tasks=tasks, task=this)


def multi_worker(kind: str = "auto") -> Cluster | None:
    """The cluster final training spans under `train.distribute` `kind`: TF_CONFIG's with `auto` or
    `multi_worker` (which requires one), else None.

    Raises:
        ConfigError: `multi_worker` without a TF_CONFIG of two or more tasks.
    """
    if kind not in ("auto", "multi_worker"):
        return None
    found = cluster()
    if kind == "multi_worker" and found is None:
        raise ConfigError(f"train.distribute multi_worker: expected {TF_CONFIG} naming two or more tasks, got "
                          f"{os.environ.get(TF_CONFIG) or 'none'}")
    return found


def distribution_strategy(kind: str = "auto"):
    """The tf.distribute strategy for `train.distribute`.

    auto: MultiWorkerMirroredStrategy when TF_CONFIG names two or more tasks (it must then be made before
    any other TensorFlow operation of the process), else MirroredStrategy over all GPUs when there are two
    or more, else the default strategy. multi_worker: MultiWorkerMirroredStrategy from TF_CONFIG.
    mirrored: MirroredStrategy over all GPUs, or over all logical CPU devices when there is no GPU (how the
    multi-device path is tested on CPU). none: the default strategy.
    """
    import tensorflow as tf

    if multi_worker(kind) is not None:
        return _multi_worker_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if kind == "mirrored":
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if kind == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _multi_worker_strategy():
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    # Keras 3 reduces metrics and its first batch across workers with calls MultiWorkerMirroredStrategy
    # refuses (keras-team/keras#20585). The metrics' variables already sum over every worker when read, and
    # the gradients are summed by the optimizer, so the local reduction Keras uses on one machine is exact.
    trainer._collective_all_reduce_multi_worker = lambda strategy: False
    return tf.distribute.MultiWorkerMirroredStrategy()


def prepare(model, strategy) -> None:
    """Lets `model.fit` run under a multi-worker `strategy`: Keras 3 builds its metrics from a first batch it
    reduces across workers, which MultiWorkerMirroredStrategy refuses; this replica's part of it is as good."""
    import types

    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    build = model._maybe_symbolic_build

    def local_build(self, iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], next(batches))
                break
        return build(data_batch=data_batch)

    model._maybe_symbolic_build = types.MethodType(local_build, model)


def agree(strategy, value: float, op: str = "MIN") -> float:
    """`value` agreed by every worker of `strategy` (their minimum or maximum); `value` itself on one machine.

    Decisions taken from each machine's own clock (the epochs a budget allows) must be the same on every
    worker, or one would stop training while the others wait for it.
    """
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return value
    every = strategy.gather(strategy.run(lambda: tf.constant([value], tf.float64)), axis=0)  # one per replica
    return float((tf.reduce_min if op == "MIN" else tf.reduce_max)(every))


def same_everywhere(strategy, what, differ: str) -> None:
    """Checks that every worker of `strategy` holds the same `what` (anything JSON can write).

    Raises:
        ConfigError: `differ` (what the workers hold differs, and what to do about it).
    """
    import hashlib

    mine = int(hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:13], 16)  # exact in a float64
    if agree(strategy, mine, "MIN") != agree(strategy, mine, "MAX"):
        raise ConfigError(differ)


def lost_worker(exc: BaseException, where: Cluster) -> WorkerLost | None:
    """The one-line error for a multi-worker collective that failed because a member is gone, else None."""
    import tensorflow as tf

    if not isinstance(exc, (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError,
                            tf.errors.CancelledError, tf.errors.InternalError)):
        return None
    text = str(exc)
    why = "heartbeat timeout" if "heartbeat" in text else type(exc).__name__
    return WorkerLost(f"train: lost {where.named(text)} of the multi-worker training ({why}); run the same command "
                      "again on every worker to resume from the last epoch's backup")


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
