"""The `predict` command: a pushed model's predictions for image files, directories or a dataset split."""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from components import formats, image_features
from components.versions import model_info
from components.ingest import DataConfig
from pipeline.config import Config
from engine.errors import ConfigError, DataError, first_line

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


class _Inputs(NamedTuple):
    """What predict serves: raw uint8 images [N, 28, 28] (the source's polarity), labels (None without), the
    split, each input's name, the data's class names (empty: numbered labels) and which images were resized."""

    images: np.ndarray
    labels: np.ndarray | None
    split: str | None
    names: list[str]
    classes: tuple[str, ...]
    resized: np.ndarray


def _files(arguments: list[str]) -> _Inputs:
    """The images of IMAGE arguments: files, and the PNG and JPEG files of directories, read as `folder:`."""
    paths = []
    for argument in map(Path, arguments):
        if argument.is_dir() and any(p.is_dir() for p in argument.iterdir()):
            raise DataError(f"{argument}: a directory with sub-folders; predict reads the images of a directory, "
                            f"not of its sub-folders: pass --dataset folder:{argument} for class folders")
        found = formats.image_files(argument) if argument.is_dir() else [argument]
        if argument.is_dir():
            formats.warn_skipped([argument])
        if not found:
            raise DataError(f"{argument}: a directory without PNG or JPEG files")
        paths += found
    images, _, resized = formats.read_images(paths)
    return _Inputs(images, None, None, [str(p) for p in paths], (), resized)


def _dataset_arrays(spec: str, cfg: Config, limit: int | None) -> _Inputs:
    """The images of a predict `--dataset`, with the polarity of their source."""
    from components import ingest
    from components.inputs import split_arrays
    from engine.runner import Runner

    parsed = ingest.DatasetSpec.parse(spec)
    if parsed.kind in ("folder", "csv") and not parsed.split:  # every image of the files, named by its file
        loaded = parsed.load()
        parts = list(loaded.splits.values())
        images = np.concatenate([p.images for p in parts])[:limit]
        labelled = all(p.labels is not None for p in parts)
        labels = np.concatenate([p.labels for p in parts])[:limit] if labelled else None
        resized = np.array([r for p in parts for r in (p.resized or (False,) * len(p.images))], bool)[:limit]
        return _Inputs(images, labels, None, [s for p in parts for s in p.sources][:limit], loaded.classes, resized)
    whole = spec[: -len(parsed.split) - 1] if parsed.split else spec
    every = parsed.split == ingest.ALL  # every example of every split, ingested into test
    examples = Runner(cfg.root)(ingest.COMPONENT, data=DataConfig(dataset=whole),
                                **({"whole": "always"} if every else {}))
    split = "test" if every else parsed.split or "test"
    images, labels = split_arrays(examples.file_pattern(split), limit)
    if not len(images):
        raise DataError(f"{spec}: the {split} split is empty")
    images = images.reshape(-1, SIDE, SIDE)
    if examples.inverted:  # back to the source's polarity: the model's signature applies its own inversion
        images = image_features.as_delivered(images, True)
    from components.schema import dataset_classes

    return _Inputs(images, labels if (labels >= 0).all() else None, split,
                   [f"{split}[{i}]" for i in range(len(images))], dataset_classes(examples, cfg.schema_dir),
                   np.zeros(len(images), bool))


def _shown(names) -> str:
    names = list(names)
    return ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def model_labels(labels: np.ndarray | None, data_classes: tuple[str, ...], model_classes: tuple[str, ...],
                 spec: str) -> np.ndarray | None:
    """The data's labels as the model's class ids: by name when the data names its classes (folder classes are
    numbered alphabetically, the model's in its own order), else as they are.

    Raises:
        DataError: listing both, when the data has a class the model does not (its accuracy would count
            unrelated classes as mistakes or hits).

    Example:
        >>> model_labels(np.array([0, 1]), ("1", "0"), ("0", "1"), "folder:d").tolist()
        [1, 0]
    """
    if labels is None or not model_classes:
        return labels
    names = data_classes or tuple(str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0))
    unknown = [n for n in names if n not in model_classes] if data_classes else names[len(model_classes):]
    if unknown:
        raise DataError(f"{spec}: the data's classes ({_shown(names)}) differ from the model's "
                        f"({_shown(model_classes)}); name the class folders as the model's classes, or predict "
                        "the images without labels (a folder of images only)")
    if not data_classes:
        return labels
    return np.array([model_classes.index(n) for n in names], np.int64)[labels]


def polarity_warnings(images: np.ndarray, resized: np.ndarray, inverted: bool) -> list[list[str]]:
    """Per image, why its prediction may be wrong: a background of the other polarity than the training data's
    source (light when it had dark ink on light, `inverted`, dark otherwise), or another size than 28x28."""
    light = image_features.background(images) > image_features.LIGHT if len(images) else np.zeros(0, bool)
    trained = "light" if inverted else "dark"
    out = []
    for is_light, was_resized in zip(light, resized):
        found = []
        if is_light != inverted:
            found.append(f"polarity: a {'light' if is_light else 'dark'} background, unlike the model's training "
                         f"data ({trained}): invert the image")
        if was_resized:
            found.append(f"size: not {SIDE}x{SIDE} as the training data, resized")
        out.append(found)
    return out


def predict(model_dir: str | None, serving_dir: str | None, images: list[str], dataset: str | None,
            limit: int | None, cfg: Config) -> dict[str, Any]:
    """Predictions of a SavedModel (`model_dir`, or the latest version in `serving_dir`).

    Image files (PNG or JPEG, any size, colour: read as `folder:` reads them) and directories of them, or a
    dataset split (`SPEC[:SPLIT]`, default split test; every image of a `folder:` or `csv:` source without a
    split), go through `serving_default`, which inverts them when the model was trained on inverted data. The
    result holds the `accuracy` when the data has labels (mapped to the model's classes by name), and
    `warnings` when inputs differ from the training data in polarity or size.
    """
    import tensorflow as tf

    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: expected a positive number of examples")
    model = Path(model_dir) if model_dir else latest_version(serving_dir)
    signatures = _signatures(model)
    info = model_info(model)
    inputs = _files(images) if images else _dataset_arrays(dataset, cfg, limit)
    labels = model_labels(inputs.labels, inputs.classes, tuple(info.get("classes", ())), dataset or "")
    out = {k: [] for k in ("class_ids", "probabilities", "classes")}
    for start in range(0, len(inputs.images), 2048):
        part = signatures["serving_default"](images=tf.constant(inputs.images[start:start + 2048]))
        for k in out:
            if k in part:  # `classes` only from versions pushed with class names
                out[k].append(part[k].numpy())
    out = {k: np.concatenate(v) for k, v in out.items() if v}
    names = inputs.names
    class_ids, probabilities = np.asarray(out["class_ids"]), np.asarray(out["probabilities"])
    class_names = [n.decode() for n in np.asarray(out["classes"])] if "classes" in out else [None] * len(names)
    warned = polarity_warnings(inputs.images, inputs.resized, bool(info.get("inverted", False)))
    predictions = [{"input": name, "class_id": int(c), **({"class": n} if n is not None else {}),
                    "probability": round(float(p[c]), 6), **({"warnings": w} if w else {})}
                   for name, c, n, p, w in zip(names, class_ids, class_names, probabilities, warned)]
    if labels is not None:
        for row, label in zip(predictions, labels):
            row["label"] = int(label)
    result: dict[str, Any] = {"model": str(model), "predictions": predictions}
    if dataset is not None:
        result.update(dataset=dataset, split=inputs.split, count=len(predictions))
    if labels is not None:
        result.update(accuracy=round(float((class_ids == labels).mean()), 6))
    kinds = {}
    for name, found in zip(names, warned):
        for text in found:
            kinds.setdefault(text, []).append(name)
    if kinds:
        result["warnings"] = [f"{len(who)} of {len(names)} inputs: {text} ({_shown(who)}); their predictions may "
                              "be wrong" for text, who in kinds.items()]
    return result
