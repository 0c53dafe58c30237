"""Readers for the image datasets people have besides IDX: folders of PNG/JPEG files and pixel CSV files."""
from __future__ import annotations

import itertools
import logging
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import DataError, first_line

SIDE = 28
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_PIXELS = 4096 * 4096  # larger images are refused from their header, before decoding
SPLIT_FOLDERS = {"train": "train", "training": "train", "test": "test", "testing": "test", "t10k": "test"}
# Recorded with the data: what was done to images that were not 28x28 grayscale.
RESIZE_POLICY = (f"decoded to grayscale (ITU-R 601 luma); other sizes resized to {SIDE}x{SIDE} "
                 "by area averaging, aspect ratio not kept")


@dataclass(frozen=True)
class Split:
    """One split read from files: uint8 images [N, 28, 28], int64 labels [N] (None when unlabeled), and where
    each image came from (a file, or a CSV line) when the reader knows."""

    images: np.ndarray
    labels: np.ndarray | None
    sources: tuple[str, ...] = ()
    resized: tuple[bool, ...] = ()  # per image, when read from files: it was not 28x28

    @property
    def count(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.images.shape[1:]

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def chunks(self, size: int):
        """Images and labels `size` at a time, as `idx.IdxSplit` streams them (here views of the arrays)."""
        for start in range(0, len(self.images), size):
            yield self.images[start:start + size], None if self.labels is None else self.labels[start:start + size]

    def label_chunks(self, size: int):
        """The labels alone, `size` at a time (none when unlabeled)."""
        yield from (labels for _, labels in self.chunks(size) if labels is not None)


@dataclass(frozen=True)
class Loaded:
    """What a reader found: its splits, the class names when the data names them (label i is `classes[i]`;
    empty for numbered labels, whose classes the schema sets), and how images were adapted."""

    splits: dict[str, Split]
    classes: tuple[str, ...]
    preprocessing: str = ""


def image_files(directory: Path) -> list[Path]:
    """The PNG and JPEG files directly in `directory`, by name (hidden files left out)."""
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def warn_skipped(directories) -> int:
    """Warns (one line on the `pipeline` log) of the files in `directories` that are read as no image: neither
    PNG nor JPEG by their name, hidden files left out. Returns how many there were."""
    skipped = sorted(p for d in directories for p in d.iterdir()
                     if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in IMAGE_SUFFIXES)
    if skipped:
        more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
        logging.getLogger("pipeline").warning("warning: %d file%s skipped, not PNG or JPEG images (%s%s)",
                                              len(skipped), "s" * (len(skipped) > 1), skipped[0], more)
    return len(skipped)


def _subfolders(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_size(path: Path, data: bytes, limit: int = MAX_PIXELS) -> tuple[int, int]:
    """Width and height of a PNG or JPEG as its header declares them, read without decoding the pixels.

    Raises:
        DataError: naming the file when it is neither a PNG nor a JPEG, or declares more than `limit` pixels
            (decoding a 15000x15000 PNG of 219 KB takes gigabytes).
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if data[12:16] != b"IHDR" or len(data) < 24:
            raise DataError(f"{path}: not a readable PNG or JPEG image (no PNG header)")
        width, height = struct.unpack(">II", data[16:24])
    elif data.startswith(b"\xff\xd8"):
        import tensorflow as tf

        try:
            height, width = (int(n) for n in tf.io.extract_jpeg_shape(data).numpy()[:2])
        except tf.errors.InvalidArgumentError:
            raise DataError(f"{path}: not a readable PNG or JPEG image (corrupt JPEG header)") from None
    else:
        raise DataError(f"{path}: not a readable PNG or JPEG image (neither signature)")
    if width * height > limit:
        raise DataError(f"{path}: {width}x{height} pixels, over the limit of {limit} pixels "
                        f"({int(limit ** 0.5)}x{int(limit ** 0.5)}); scale it down before reading it")
    return width, height


def read_images(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decodes PNG/JPEG files into uint8 [N, 28, 28], each checked by `image_size` first; returns the images,
    which were colour and which resized (bool [N] each).

    Raises:
        DataError: naming the first file that is unreadable, not a PNG or JPEG image, or too large.
    """
    import tensorflow as tf

    out = np.zeros((len(paths), SIDE, SIDE), np.uint8)
    colour, resized = np.zeros(len(paths), bool), np.zeros(len(paths), bool)
    for i, path in enumerate(paths):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({exc.strerror})") from None
        image_size(path, data)
        try:
            image = tf.io.decode_image(data, expand_animations=False)
        except tf.errors.InvalidArgumentError as exc:
            reason = first_line(exc.message, default="cannot decode")
            # TensorFlow wraps the decoder's words in its op's name: `{{function_node ...}} Invalid PNG data [Op:..]`
            reason = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:\w+\]", "", reason).strip() or "cannot decode"
            raise DataError(f"{path}: not a readable PNG or JPEG image ({reason})") from None
        if image.shape[-1] not in (1, 2):  # RGB or RGBA: luma, as the schema's single channel holds
            colour[i] = True
            image = tf.image.rgb_to_grayscale(image[..., :3])
        image = image[..., :1]
        if image.shape[0] != SIDE or image.shape[1] != SIDE:
            resized[i] = True
            image = tf.image.resize(tf.cast(image, tf.float32), [SIDE, SIDE], method="area")
            image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        out[i] = image.numpy()[..., 0]
    return out, colour, resized


def decode_images(paths: list[Path]) -> tuple[np.ndarray, int, int]:
    """Decodes PNG/JPEG files (see `read_images`); returns the images and how many were colour and resized."""
    images, colour, resized = read_images(paths)
    return images, int(colour.sum()), int(resized.sum())


def _refuse_loose(directory: Path) -> None:
    """Images beside class sub-folders have no class: refused, so that none is silently left out."""
    loose = image_files(directory)
    if loose:
        names = ", ".join(p.name for p in loose[:5]) + (f" and {len(loose) - 5} more" if len(loose) > 5 else "")
        raise DataError(f"{directory}: {len(loose)} images beside the class sub-folders ({names}); move them into "
                        "a class sub-folder, or give a folder of images only")


def _policy(colour: int, resized: int, total: int) -> str:
    return f"{RESIZE_POLICY} ({colour} of {total} images were colour, {resized} resized)"


def load_folder(directory: Path) -> Loaded:
    """Reads `folder:DIR`: one sub-folder per class (optionally under `train/` and `test/`), or a flat folder
    of images without labels (for drift and predict).
    """
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory")
    folders = {p.name: p for p in _subfolders(directory)}
    by_split = {SPLIT_FOLDERS[n.lower()]: p for n, p in folders.items() if n.lower() in SPLIT_FOLDERS}
    if not by_split:
        by_split = {"all": directory}
    if not folders:  # a flat folder: unlabeled images
        warn_skipped([directory])
        files = image_files(directory)
        if not files:
            raise DataError(f"{directory}: no PNG or JPEG files and no class sub-folders")
        images, colour, resized = read_images(files)
        return Loaded({"all": Split(images, None, tuple(map(str, files)), tuple(resized.tolist()))}, (),
                      _policy(int(colour.sum()), int(resized.sum()), len(files)))
    for split_dir in dict.fromkeys([directory, *by_split.values()]):  # the top level first, each once
        _refuse_loose(split_dir)
    classes = tuple(sorted({c.name for split_dir in by_split.values() for c in _subfolders(split_dir)}))
    if not classes:
        raise DataError(f"{directory}: no class sub-folders (expected DIR/<class>/<image>.png)")
    warn_skipped([*dict.fromkeys([directory, *by_split.values()]),
                  *(c for split_dir in by_split.values() for c in _subfolders(split_dir))])
    splits, colour, resized, total = {}, 0, 0, 0
    for split, split_dir in by_split.items():
        files, labels = [], []
        for folder in _subfolders(split_dir):
            found = image_files(folder)
            files += found
            labels += [classes.index(folder.name)] * len(found)
        if not files:
            raise DataError(f"{split_dir}: the class sub-folders hold no PNG or JPEG files")
        images, c, r = read_images(files)
        splits[split] = Split(images, np.array(labels, np.int64), tuple(map(str, files)), tuple(r.tolist()))
        colour, resized, total = colour + int(c.sum()), resized + int(r.sum()), total + len(files)
    return Loaded(splits, classes, _policy(colour, resized, total))


def _line(path: Path, number: int) -> str:
    """Line `number` (from 1) of a text file, without its end."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
            return next(itertools.islice(f, number - 1, None), "").rstrip("\r\n")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None


def csv_header(path: Path) -> list[str]:
    """The column names of a pixel CSV file's first line, lower-cased (`Label` is `label`).

    Raises:
        DataError: the first line is separated by semicolons or tabs rather than commas, or is data
            (every field a number: the file has no header line).
    """
    first = _line(path, 1)
    fields = [f.strip().strip('"').lower() for f in first.split(",")]
    if len(fields) == 1:
        for separator, name in ((";", "semicolons (;)"), ("\t", "tabs")):
            if separator in first:
                raise DataError(f"{path}: the first line is separated by {name} ({len(first.split(separator))} "
                                "fields), not commas: expected comma-separated values; save it with commas")
    if all(re.fullmatch(r"[-+]?\d+(\.\d*)?", f) for f in fields):
        raise DataError(f"{path}: the first line is data ({len(fields)} numbers), not a header: add the header "
                        f"line 'label,pixel0,...,pixel{SIDE * SIDE - 1}' (without 'label,' for images without labels)")
    return fields


def _read_csv(path: Path) -> Split:
    import pandas as pd

    csv_header(path)
    try:
        frame = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({first_line(exc)})") from None
    columns = [str(c).strip().lower() for c in frame.columns]
    pixels = [c for c in columns if c != "label"]
    if len(pixels) != SIDE * SIDE:
        raise DataError(f"{path}: {len(pixels)} pixel columns, expected {SIDE * SIDE} "
                        f"(a 'label' column and pixel0..pixel783 or pixel1..pixel784)")
    numeric = frame.apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna().to_numpy() | (numeric.fillna(0).to_numpy() % 1 != 0)
    if bad.any():
        row, column = map(int, np.argwhere(bad)[0])
        fields = _line(path, row + 2).split(",")
        if len(fields) < len(columns):  # pandas fills a short row with NaN: a cut-off last line, typically
            raise DataError(f"{path}: line {row + 2} has {len(fields)} fields of {len(columns)} (cut off?): "
                            "complete it or delete it")
        value = "empty" if not fields[column].strip() else f"'{frame.iloc[row, column]}'"
        raise DataError(f"{path}: line {row + 2}: column {columns[column]} is {value}, expected a whole number")
    frame = numeric.astype(np.int64)
    frame.columns = columns
    out_of_range = (frame[pixels].to_numpy() < 0) | (frame[pixels].to_numpy() > 255)
    if out_of_range.any():
        row, column = map(int, np.argwhere(out_of_range)[0])
        raise DataError(f"{path}: line {row + 2}: column {pixels[column]} is "
                        f"{int(frame[pixels].iloc[row, column])}, expected 0-255")
    images = frame[pixels].to_numpy().astype(np.uint8).reshape(-1, SIDE, SIDE)
    sources = tuple(f"{path}:{line}" for line in range(2, len(frame) + 2))
    if "label" not in columns:
        return Split(images, None, sources)
    labels = frame["label"].to_numpy().astype(np.int64)
    if (labels < 0).any():
        raise DataError(f"{path}: line {int(np.argmax(labels < 0)) + 2}: label {int(labels.min())}, "
                        "expected a class index 0 or more")
    return Split(images, labels, sources)


def load_csv(location: Path) -> Loaded:
    """Reads `csv:FILE` (a `label` column and 784 pixel columns, as Kaggle's MNIST files), or `csv:DIR` with
    one file per split (`*train*.csv`, `*test*.csv`). Files without a label column are unlabeled images.
    """
    # Numbered labels: the schema says how many classes there are.
    return Loaded({split: _read_csv(path) for split, path in csv_files(location).items()}, ())


def csv_files(location: Path) -> dict[str, Path]:
    """The file of each split of `csv:FILE` (`all`) or `csv:DIR` (`train`, and `test` when there is one)."""
    if location.is_file():
        return {"all": location}
    if not location.is_dir():
        raise DataError(f"{location}: no such file or directory")
    files = {split: [p for p in sorted(location.glob("*.csv")) if split in p.name.lower()]
             for split in ("train", "test")}
    if not files["train"] or len(files["train"]) > 1 or len(files["test"]) > 1:
        raise DataError(f"{location}: expected one *train*.csv and at most one *test*.csv, found "
                        f"{', '.join(p.name for p in sorted(location.glob('*.csv'))) or 'none'}")
    return {split: found[0] for split, found in files.items() if found}
