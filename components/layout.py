"""Ingest's layout of a source's splits into train, eval and test by content hash, a chunk of images at a time."""
from __future__ import annotations

import hashlib
from typing import Iterator, Protocol

import numpy as np

from components import image_features

SPLITS = ("train", "eval", "test")  # the splits of every Examples; an image's code in `Parts` is its index here
TRAIN, EVAL, TEST = range(3)
CHUNK = 8192  # images read, hashed, summarized and encoded at a time: what memory holds of a split


class Source(Protocol):
    """One split of a source as ingest reads it: `formats.Split` (arrays) or `idx.IdxSplit` (files)."""

    count: int
    shape: tuple[int, ...]
    labelled: bool

    def chunks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]: ...

    def label_chunks(self, size: int) -> Iterator[np.ndarray]: ...


# Per output split, the sources that feed it in order, each with the code of every one of its images.
Parts = dict[str, list[tuple[Source, np.ndarray]]]


def hash_fraction(images: np.ndarray, salt: bytes) -> np.ndarray:
    """A deterministic number in [0, 1) per image, from its pixels: duplicates land in one split."""
    flat = images.reshape(len(images), int(np.prod(images.shape[1:])))
    return np.array([int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8, key=salt).digest(), "big")
                     for row in flat], dtype=np.float64) / 2.0**64


def _codes(source: Source, test_fraction: float | None, eval_fraction: float, inverted: bool) -> np.ndarray:
    """Each image's split: test when `test_fraction` carves it out, else eval when `eval_fraction` does, else
    train. One byte per image is what ingest keeps of a split while it streams it."""
    codes = np.empty(source.count, np.uint8)
    start = 0
    for images, _ in source.chunks(CHUNK):
        images = image_features.as_delivered(images, inverted)  # hashed as written: inversion first
        test = (hash_fraction(images, b"test") < test_fraction if test_fraction is not None
                else np.zeros(len(images), bool))
        held = np.zeros(len(images), bool)
        held[~test] = hash_fraction(images[~test], b"eval") < eval_fraction
        codes[start:start + len(images)] = np.where(test, TEST, np.where(held, EVAL, TRAIN))
        start += len(images)
    return codes


def assign(splits: dict[str, Source], whole: str, test_fraction: float, eval_fraction: float,
           inverted: bool) -> Parts:
    """Train and test: as the source has them, a sole test split whole (train empty), a sole other split
    carved by hash; or with `whole` "always" (or "single" and one split), every example in test. Eval is
    carved from train by hash."""
    if whole == "always" or (whole == "single" and len(splits) == 1) or set(splits) == {"test"}:
        parts = [(source, np.full(source.count, TEST, np.uint8)) for source in splits.values()]
        return {split: parts for split in SPLITS}
    if set(splits) != {"train", "test"}:  # one split (all, or only train): test is carved from it
        [only] = splits.values()
        parts = [(only, _codes(only, test_fraction, eval_fraction, inverted))]
        return {split: parts for split in SPLITS}
    train = [(splits["train"], _codes(splits["train"], None, eval_fraction, inverted))]
    return {"train": train, "eval": train, "test": [(splits["test"], np.full(splits["test"].count, TEST, np.uint8))]}


def rows(parts: list[tuple[Source, np.ndarray]], code: int, inverted: bool
         ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """The images (with the polarity ingest writes) and labels of one split, in source order, a chunk at a time."""
    for source, codes in parts:
        if not (codes == code).any():  # a source with nothing for this split is not read
            continue
        start = 0
        for images, labels in source.chunks(CHUNK):
            mask = codes[start:start + len(images)] == code
            start += len(images)
            if mask.any():
                yield image_features.as_delivered(images[mask], inverted), None if labels is None else labels[mask]


def labels(parts: list[tuple[Source, np.ndarray]], code: int) -> Iterator[np.ndarray]:
    """The labels of one split, in source order, a chunk at a time; the images are not read."""
    for source, codes in parts:
        start = 0
        for chunk in source.label_chunks(CHUNK):
            yield chunk[codes[start:start + len(chunk)] == code]
            start += len(chunk)


def count(parts: list[tuple[Source, np.ndarray]], code: int) -> int:
    """How many images of the sources go to the split of `code`."""
    return sum(int(np.count_nonzero(codes == code)) for _, codes in parts)
