"""The `predict` command: a pushed model's predictions for PNG files or a dataset split."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Config, DataConfig
from pipeline.engine.errors import ConfigError, DataError, first_line

SIDE = 28


def latest_version(serving_dir: str | Path) -> Path:
    """The highest-numbered complete version in a TF Serving directory.

    Raises:
        DataError: the directory is missing or holds no version with a saved_model.pb.
    """
    serving = Path(serving_dir)
    versions = sorted((int(p.name) for p in serving.iterdir() if p.name.isdigit()
                       and (p / "saved_model.pb").is_file()), reverse=True) if serving.is_dir() else []
    if not versions:
        raise DataError(f"{serving}: no pushed model version (expected <version>/saved_model.pb)")
    return serving / str(versions[0])


def _signatures(model_dir: Path):
    import tensorflow as tf

    if not (model_dir / "saved_model.pb").is_file():
        raise DataError(f"{model_dir}: not a SavedModel directory (no saved_model.pb)")
    try:
        return tf.saved_model.load(str(model_dir)).signatures
    except Exception as exc:  # a corrupt or partial SavedModel fails in many ways: parse, variables, ops
        raise DataError(f"{model_dir}: the SavedModel cannot be loaded ({type(exc).__name__}: "
                        f"{first_line(exc, 200)})") from None


def _png_batch(paths: list[str]) -> list[bytes]:
    blobs = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({exc.strerror})") from None
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise DataError(f"{path}: not a PNG file")
        blobs.append(data)
    return blobs


def _dataset_arrays(spec: str, cfg: Config, limit: int | None
                    ) -> tuple[np.ndarray, np.ndarray | None, str | None, list[str] | None]:
    """Images, labels (None when the data has none), split and input names of a predict `--dataset`."""
    from components import ingest
    from components.inputs import split_arrays
    from pipeline.engine.runner import Runner

    parsed = ingest.DatasetSpec.parse(spec)
    if parsed.kind in ("folder", "csv") and not parsed.split:  # every image of the files, named by its file
        parts = list(parsed.load().splits.values())
        images = np.concatenate([p.images for p in parts])[:limit]
        labelled = all(p.labels is not None for p in parts)
        labels = np.concatenate([p.labels for p in parts])[:limit] if labelled else None
        return images, labels, None, [s for p in parts for s in p.sources][:limit]
    whole = spec[: -len(parsed.split) - 1] if parsed.split else spec
    every = parsed.split == ingest.ALL  # every example of every split, ingested into test
    examples = Runner(cfg.root)(ingest.COMPONENT, data=DataConfig(dataset=whole),
                                **({"whole": "always"} if every else {}))
    split = "test" if every else parsed.split or "test"
    images, labels = split_arrays(examples.file_pattern(split), limit)
    if not len(images):
        raise DataError(f"{spec}: the {split} split is empty")
    return images.reshape(-1, SIDE, SIDE), labels if (labels >= 0).all() else None, split, None


def predict(model_dir: str | None, serving_dir: str | None, images: list[str], dataset: str | None,
            limit: int | None, cfg: Config) -> dict[str, Any]:
    """Predictions of a SavedModel (`model_dir`, or the latest version in `serving_dir`).

    PNG files go through the `serving_png` signature; a dataset split (`SPEC[:SPLIT]`, default split
    test; every image of a `folder:` or `csv:` source without a split) through `serving_default`, and the
    result also holds its `accuracy` when the data has labels.

    Example:
        >>> predict(None, "pipeline_root/serving", [], "fashion_mnist:test", 1000, Config())["accuracy"]
        0.9031
    """
    import tensorflow as tf

    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: expected a positive number of examples")
    model = Path(model_dir) if model_dir else latest_version(serving_dir)
    signatures = _signatures(model)
    if images:
        try:
            out = signatures["serving_png"](png=tf.constant(_png_batch(images)))
        except tf.errors.InvalidArgumentError as exc:
            detail = "expected 28x28 images" if "28x28" in str(exc) else "cannot decode"
            raise DataError(f"{', '.join(images)}: {detail} (the model takes grayscale 28x28 PNG files)") from None
        names, labels, split = list(images), None, None
    else:
        arrays, labels, split, sources = _dataset_arrays(dataset, cfg, limit)
        out = {k: [] for k in ("class_ids", "probabilities", "classes")}
        for start in range(0, len(arrays), 2048):
            part = signatures["serving_default"](images=tf.constant(arrays[start:start + 2048]))
            for k in out:
                if k in part:  # `classes` only from versions pushed with class names
                    out[k].append(part[k].numpy())
        out = {k: np.concatenate(v) for k, v in out.items() if v}
        names = sources or [f"{split}[{i}]" for i in range(len(arrays))]
    class_ids, probabilities = np.asarray(out["class_ids"]), np.asarray(out["probabilities"])
    class_names = [n.decode() for n in np.asarray(out["classes"])] if "classes" in out else [None] * len(names)
    predictions = [{"input": name, "class_id": int(c), **({"class": n} if n is not None else {}),
                    "probability": round(float(p[c]), 6)}
                   for name, c, n, p in zip(names, class_ids, class_names, probabilities)]
    if labels is not None:
        for row, label in zip(predictions, labels):
            row["label"] = int(label)
    result: dict[str, Any] = {"model": str(model), "predictions": predictions}
    if dataset is not None:
        result.update(dataset=dataset, split=split, count=len(predictions))
    if labels is not None:
        result.update(accuracy=round(float((class_ids == labels).mean()), 6))
    return result
