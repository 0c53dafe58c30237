"""The TFDS source of ingest: a TFDS image-classification dataset read as uint8 images and labels per split."""
from __future__ import annotations

import numpy as np

from components import formats
from engine.errors import DataError, first_line

TFDS_HOST = "storage.googleapis.com"  # where TFDS fetches prepared data and most MNIST-family files


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


def load_tfds(name: str, data_dir: str | None) -> formats.Loaded:
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
            first = first_line(exc, 200)
            raise DataError(f"tfds:{name}: not prepared in {builder.data_dir} and the download failed "
                            f"(offline? use idx:DIR with local IDX files): {first}") from None
    out = {}
    for split in ("train", "test"):
        try:
            batches = list(tfds.as_numpy(builder.as_dataset(split=split).batch(8192)))
        except (ValueError, KeyError):  # no such split: the test split is then carved from train
            continue
        images = np.concatenate([b["image"] for b in batches])
        # Other shapes are kept as they are: validation flags them against the schema's 784 pixels.
        images = images[..., 0] if images.ndim == 4 and images.shape[3] == 1 else images
        out[split] = formats.Split(images, np.concatenate([b["label"] for b in batches]).astype(np.int64))
    if "train" not in out:
        raise DataError(f"tfds:{name}: has no train split (splits: {', '.join(builder.info.splits)})")
    return formats.Loaded(out, tuple(features["label"].names))
