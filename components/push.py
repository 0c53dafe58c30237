"""Push: exports a blessed model as a versioned SavedModel with its preprocessing in the graph."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from pipeline.artifacts import Evaluation, Model, PushedModel
from pipeline.errors import PipelineError
from pipeline.runner import Component

SIDE = 28
INFO = "model_info.json"  # beside saved_model.pb: which model and evaluation a version came from


def export_serving(model_path: str, destination: Path) -> None:
    """Writes a SavedModel whose `serving_default` takes uint8 images [N, 28, 28].

    It returns `class_ids` [N] (int64) and `probabilities` [N, 10]; scaling to [0, 1] happens inside.

    Example:
        >>> export_serving("model.keras", Path("/tmp/export"))
        >>> tf.saved_model.load("/tmp/export").signatures["serving_default"](images=x)["class_ids"]
    """
    import keras
    import tensorflow as tf

    model = keras.models.load_model(model_path)

    def serve(images):
        probabilities = model(tf.reshape(images, [-1, SIDE * SIDE]), training=False)
        return {"class_ids": tf.argmax(probabilities, axis=-1), "probabilities": probabilities}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serving_default", fn=serve,
                         input_signature=[tf.TensorSpec([None, SIDE, SIDE], tf.uint8, name="images")])
    archive.write_out(str(destination), verbose=False)


def _versions(serving_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in serving_dir.iterdir() if p.name.isdigit()) if serving_dir.is_dir() else []


def push(model: Model, evaluation: Evaluation, *, out_dir: Path, serving_dir: Path) -> PushedModel:
    """Copies the blessed model into `<serving_dir>/<version>/`, atomically and never over a version.

    The SavedModel is written to a hidden temporary directory beside the versions and renamed into
    place, so a server watching `serving_dir` never sees a partial version.

    Example:
        >>> push(model, evaluation, out_dir=Path("/tmp/push"), serving_dir=Path("/srv/models/fmnist")).version
        3
    """
    if not evaluation.blessed:
        raise PipelineError(f"push: model {model.uri} is not blessed ({'; '.join(evaluation.reasons)})")
    try:
        serving_dir.mkdir(parents=True, exist_ok=True)
        staging = serving_dir / f".staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        export_serving(model.path, staging)
        (staging / INFO).write_text(json.dumps({"model": model.uri, "model_fingerprint": model.fingerprint,
                                                "accuracy": evaluation.accuracy}, indent=2))
    except OSError as exc:
        raise PipelineError(f"{serving_dir}: cannot write the serving directory ({exc.strerror})") from None
    while True:  # another push may take a version number between our look and our rename
        version = (_versions(serving_dir) or [0])[-1] + 1
        try:
            os.rename(staging, serving_dir / str(version))
            break
        except OSError:
            if not (serving_dir / str(version)).exists():
                raise
    return PushedModel(uri=str(serving_dir / str(version)), fingerprint="", version=version)


COMPONENT = Component(name="push", fn=push, inputs=(Model, Evaluation), output=PushedModel, version="1")
