"""Ingest: reads an MNIST-family dataset (TFDS or IDX files) and writes tf.Example TFRecords per split."""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components import image_features
from components.idx import read_idx
from pipeline.config import DataConfig
from pipeline.engine.artifacts import SPLITS, Examples
from pipeline.engine.component import Component
from pipeline.engine.errors import DataError
from pipeline.engine.failpoints import failpoint
from pipeline.engine.progress import Bar

# Debian packages that install real datasets offline (apt-get install dataset-fashion-mnist).
LOCAL_COPIES = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}
SHARD_SIZE = 20_000
TFDS_HOST = "storage.googleapis.com"  # where TFDS fetches prepared data and most MNIST-family files
_IDX_NAME = re.compile(r"^(?P<prefix>.*?)[-_.]?(?P<kind>images|labels)[-_.]idx(?P<ndim>\d)[-_.]ubyte(\.gz)?$")
_SPLIT_ALIASES = {"train": "train", "t10k": "test", "test": "test"}


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed `--dataset` value: `NAME`, `tfds:NAME` or `idx:DIR`, each with an optional `:SPLIT`."""

    kind: str  # "tfds" or "idx"
    location: str  # TFDS name or directory
    name: str  # dataset name for curated schemas and thresholds ("" for a plain directory)
    split: str | None = None

    @classmethod
    def parse(cls, spec: str) -> "DatasetSpec":
        """Parses a dataset spec.

        Example:
            >>> DatasetSpec.parse("idx:/data/mnist:test")
            DatasetSpec(kind='idx', location='/data/mnist', name='', split='test')
        """
        head, _, last = spec.rpartition(":")
        split = last if head and last in SPLITS else None
        body = head if split else spec
        kind, sep, rest = body.partition(":")
        if not sep:
            kind, rest = "", body
        if kind == "idx" and rest:
            return cls("idx", rest, "", split)
        if kind in ("", "tfds") and re.fullmatch(r"[a-z0-9_]+(/[\w.]+)?", rest or ""):
            local = LOCAL_COPIES.get(rest)
            if not kind and local is not None and local.is_dir():
                return cls("idx", str(local), rest, split)
            return cls("tfds", rest, rest.split("/")[0], split)
        raise DataError(f"dataset spec '{spec}': expected NAME, tfds:NAME or idx:DIR, optionally followed by "
                        f":{'|:'.join(SPLITS)}")


def _find_idx_files(directory: Path) -> dict[str, tuple[Path, Path]]:
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory")
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(directory.iterdir()):
        match = _IDX_NAME.match(path.name)
        if match:
            found.setdefault(match["prefix"], {})[match["kind"]] = path
    if not found:
        raise DataError(f"{directory}: no IDX files (expected names like train-images-idx3-ubyte.gz "
                        "and train-labels-idx1-ubyte.gz)")
    pairs = {}
    for prefix, files in found.items():
        for kind, other in (("images", "labels"), ("labels", "images")):
            if kind not in files:
                raise DataError(f"{files[other]}: no matching {kind} file in {directory}")
        pairs[_SPLIT_ALIASES.get(prefix.lower(), prefix or "all")] = (files["images"], files["labels"])
    return pairs


def _read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(f"{images_path}: expected images of rank 3 [count, rows, cols], got shape {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: expected labels of rank 1 [count], got shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{images_path}: {len(images)} images but {labels_path.name} has {len(labels)} labels")
    return images, labels.astype(np.int64)


def _hash_fraction(images: np.ndarray, salt: bytes) -> np.ndarray:
    """A deterministic number in [0, 1) per image, from its pixels: duplicates land in one split."""
    flat = images.reshape(len(images), -1)
    return np.array([int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8, key=salt).digest(), "big")
                     for row in flat], dtype=np.float64) / 2.0**64


def _carve(images, labels, fraction: float, salt: bytes):
    held_out = _hash_fraction(images, salt) < fraction
    return (images[~held_out], labels[~held_out]), (images[held_out], labels[held_out])


def load_idx(directory: Path, test_fraction: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads train and test splits from an IDX directory; a single split is divided by hash."""
    pairs = _find_idx_files(directory)
    if "train" in pairs and "test" in pairs:
        return {split: _read_pair(*pairs[split]) for split in ("train", "test")}
    if len(pairs) == 1:
        images, labels = _read_pair(*next(iter(pairs.values())))
        train, test = _carve(images, labels, test_fraction, b"test")
        return {"train": train, "test": test}
    raise DataError(f"{directory}: expected train and test IDX files or a single split, "
                    f"found splits {', '.join(sorted(pairs))}")


def _require_network(name: str, data_dir) -> None:
    """Fails fast when offline: a TFDS download retries for many minutes before giving up."""
    import socket

    try:
        socket.setdefaulttimeout(5)
        socket.getaddrinfo(TFDS_HOST, 443)
    except OSError:
        raise DataError(f"tfds:{name}: not prepared in {data_dir} and no network to download it "
                        "(cannot resolve the TFDS download host); use idx:DIR with local IDX files") from None
    finally:
        socket.setdefaulttimeout(None)


def load_tfds(name: str, data_dir: str | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads a TFDS image-classification dataset, downloading it if it is not prepared yet."""
    import tensorflow_datasets as tfds  # slow import, only for this path

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(f"tfds:{name}: unknown TFDS dataset") from None
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise DataError(f"tfds:{name}: not an image-classification dataset (features: {', '.join(features)})")
    if not builder.is_prepared():
        _require_network(name, builder.data_dir)
        try:
            builder.download_and_prepare()
        except Exception as exc:  # TFDS raises many kinds; all mean the same to the user
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise DataError(f"tfds:{name}: not prepared in {builder.data_dir} and the download failed "
                            f"(offline? use idx:DIR with local IDX files): {first}") from None
    out = {}
    for split in ("train", "test"):
        try:
            batches = list(tfds.as_numpy(builder.as_dataset(split=split).batch(8192)))
        except (ValueError, KeyError):  # no such split: the test split is then carved from train
            continue
        images = np.concatenate([b["image"] for b in batches])
        out[split] = (images.reshape(images.shape[:3]) if images.ndim == 4 and images.shape[3] == 1 else images,
                      np.concatenate([b["label"] for b in batches]).astype(np.int64))
    if "train" not in out:
        raise DataError(f"tfds:{name}: has no train split (splits: {', '.join(builder.info.splits)})")
    return out


def write_split(images: np.ndarray, labels: np.ndarray, directory: Path) -> None:
    """Writes examples as gzipped TFRecord shards `data-NNNNN-of-NNNNN.tfrecord.gz`.

    Each tf.Example holds `image` (the pixels as int64), `label` (int64) and one float per
    summary feature of `image_features` (mean intensity, ink fraction, bounding box, ...).
    """
    import tensorflow as tf

    directory.mkdir(parents=True)
    flat = images.reshape(len(images), int(np.prod(images.shape[1:])))
    summaries = image_features.summarize(images) if len(images) else {n: [] for n in image_features.NAMES}
    shards = max(1, math.ceil(len(flat) / SHARD_SIZE))
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    Feature, Int64List, FloatList = tf.train.Feature, tf.train.Int64List, tf.train.FloatList
    bar = Bar(f"ingest {directory.name}", total=len(flat), unit="examples")
    for shard in range(shards):
        with tf.io.TFRecordWriter(str(directory / f"data-{shard:05d}-of-{shards:05d}.tfrecord.gz"), options) as w:
            for i in range(shard, len(flat), shards):
                feature = {"image": Feature(int64_list=Int64List(value=flat[i].tolist())),
                           "label": Feature(int64_list=Int64List(value=[int(labels[i])]))}
                for name, values in summaries.items():
                    feature[name] = Feature(float_list=FloatList(value=[float(values[i])]))
                w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
                bar.update()
    bar.close()


def source_fingerprint(data: DataConfig) -> str:
    """What identifies the source data before reading it: IDX file bytes, or the TFDS name."""
    spec = DatasetSpec.parse(data.dataset)
    if spec.kind == "tfds":
        return f"tfds:{spec.location}:{data.tfds_data_dir}"
    digest = hashlib.sha256()
    for images, labels in _find_idx_files(Path(spec.location)).values():
        for path in (images, labels):
            digest.update(path.name.encode())
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def ingest(*, out_dir: Path, data: DataConfig) -> Examples:
    """Reads the dataset named by `data.dataset` and writes train, eval and test TFRecords.

    Args:
        out_dir: the artifact directory to fill.
        data: the dataset spec and split fractions.

    Returns:
        The Examples artifact with per-split counts and a fingerprint of the decoded content.

    Raises:
        DataError: the dataset is missing, unreadable or malformed.

    Example:
        >>> examples = ingest(out_dir=Path("/tmp/ex"), data=DataConfig(dataset="idx:/data/mnist"))
        >>> examples.counts["eval"]
        6000
    """
    spec = DatasetSpec.parse(data.dataset)
    if spec.split:
        raise DataError(f"dataset spec '{data.dataset}': a run ingests a whole dataset; drop ':{spec.split}'")
    if spec.kind == "idx":
        splits, source = load_idx(Path(spec.location), data.test_fraction), f"idx:{Path(spec.location).resolve()}"
    else:
        splits, source = load_tfds(spec.location, data.tfds_data_dir), f"tfds:{spec.location}"
    if "test" not in splits:
        splits["train"], splits["test"] = _carve(*splits["train"], data.test_fraction, b"test")
    splits["train"], splits["eval"] = _carve(*splits["train"], data.eval_fraction, b"eval")
    digest = hashlib.sha256()
    for split in SPLITS:
        images, labels = splits[split]
        digest.update(f"{split}:{images.shape}".encode())
        digest.update(np.ascontiguousarray(images).tobytes())
        digest.update(labels.tobytes())
        write_split(images, labels, out_dir / split)
        failpoint("ingest.split")
    return Examples(uri=str(out_dir), fingerprint=digest.hexdigest(), spec=data.dataset, name=spec.name,
                    source=source,
                    counts={split: int(len(splits[split][1])) for split in SPLITS})


def summarize(examples: Examples | None, info: dict) -> dict:
    """The run summary's `dataset` section."""
    return {"dataset": examples and {"spec": examples.spec, "source": examples.source,
                                     "fingerprint": examples.fingerprint, "counts": examples.counts}}


COMPONENT = Component(name="ingest", fn=ingest, inputs=(), output=Examples, version="2",
                      source_key=source_fingerprint)
