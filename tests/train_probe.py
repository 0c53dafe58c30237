"""Runs `components.train.train` in a fresh process, for tests that need one (device setup, kill -9).

Usage: python tests/train_probe.py EXAMPLES_JSON OUT_DIR WORK_DIR TRAIN_JSON [--cpus N] [--seed N]

Prints one JSON line: the history, the replicas in sync, the compute dtype and the SHA-256 of the weights.
"""
import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    examples_json, out_dir, work_dir, train_json, *flags = sys.argv[1:]
    import tensorflow as tf

    if "--cpus" in flags:  # logical devices must be set before TensorFlow initialises its runtime
        cpus = int(flags[flags.index("--cpus") + 1])
        tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                                   [tf.config.LogicalDeviceConfiguration()] * cpus)
    import keras
    import numpy as np

    from components import cnn
    from components import train as train_module
    from components.cnn import REFERENCE
    from components.ingest import Examples
    from components.schema import Schema
    from components.tune import HyperParameters
    from components.train import TrainConfig

    built = {}
    original_build = cnn.build_model

    def build_and_keep(values, mixed_precision=False, classes=10, **compiled):
        built["model"] = original_build(values, mixed_precision, classes, **compiled)
        return built["model"]

    cnn.build_model = build_and_keep  # train imports it at call time
    examples = Examples.from_dict({k: v for k, v in json.loads(Path(examples_json).read_text()).items()
                                   if k != "type"})
    hp = HyperParameters(uri="", fingerprint="ref", tuner="none", values=dict(REFERENCE), trials=())
    schema_dir = Path(out_dir).parent / "probe-schema"
    schema_dir.mkdir(exist_ok=True)
    generic = Path(__file__).parent.parent / "schemas" / "mnist_family.pbtxt"
    (schema_dir / "schema.pbtxt").write_text(generic.read_text())
    schema = Schema(uri=str(schema_dir), fingerprint="generic", source="curated")
    model = train_module.train(examples, schema, hp, out_dir=Path(out_dir),
                               work_dir=Path(work_dir) if work_dir != "-" else None,
                               train=TrainConfig(**json.loads(train_json)),
                               seed=int(flags[flags.index("--seed") + 1]) if "--seed" in flags else 7)
    kept = keras.models.load_model(model.path)
    print(json.dumps({
        "history": model.history,
        "replicas": built["model"].distribute_strategy.num_replicas_in_sync,
        "compute_dtype": built["model"].get_layer("conv_1").compute_dtype,
        "output_dtype": built["model"].output.dtype if isinstance(built["model"].output.dtype, str)
        else built["model"].output.dtype.name,
        "weights_sha256": hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes()
                                                   for w in kept.get_weights())).hexdigest(),
    }))


if __name__ == "__main__":
    main()
