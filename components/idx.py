"""Reader and writer for the IDX format of MNIST-family datasets, gzipped or raw, and IDX directories."""
from __future__ import annotations

import contextlib
import gzip
import itertools
import math
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from components import formats
from engine.errors import DataError

# The third byte of the magic number names the element type; MNIST-family data is uint8.
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}
_IDX_NAME = re.compile(r"^(?P<prefix>.*?)[-_.]?(?P<kind>images|labels)[-_.]idx(?P<ndim>\d)[-_.]ubyte(\.gz)?$")
# A prefix names the split, after an optional dataset name: emnist-balanced-train, t10k, train.
_PREFIX = re.compile(r"^(?:(?P<name>.*?)[-_.])?(?P<split>train|test|t10k)$", re.IGNORECASE)
_SPLIT_ALIASES = {"train": "train", "t10k": "test", "test": "test"}


@contextlib.contextmanager
def _opened(path: Path):
    """The file to read, gunzipped when its name ends in `.gz`; what goes wrong reading it is a DataError naming it."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            yield f
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc})") from None


def _header(path: Path, data: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """The element type, shape and header length that the first bytes of an IDX file declare, checked."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError(f"{path}: wrong magic number {data[:4].hex() or '(empty file)'}, "
                        "expected 0x0000 followed by a type code and a dimension count (e.g. 00000803)")
    dtype, ndim = np.dtype(_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated header: {len(data)} bytes, expected at least {header}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(shape) * dtype.itemsize  # Python's integers: no overflow to a negative size
    if expected > np.iinfo(np.intp).max:
        raise DataError(f"{path}: impossible header: its dimensions {'x'.join(map(str, shape))} make {expected:.3g} "
                        "bytes, more than any file or array holds; the file is corrupt or not IDX")
    return dtype, shape, header


def _wrong_size(path: Path, size: int, shape: tuple[int, ...], header: int, dtype: np.dtype) -> DataError:
    expected = header + math.prod(shape) * dtype.itemsize
    return DataError(f"{path}: {size} bytes, expected {expected} for shape {'x'.join(map(str, shape))} "
                     "(truncated or padded)")


def read_idx(path: str | Path) -> np.ndarray:
    """Reads one IDX file into an array of the shape its header declares.

    Args:
        path: an IDX file, gzipped when its name ends in `.gz`.

    Returns:
        The array, e.g. uint8 of shape [60000, 28, 28] for MNIST training images.

    Raises:
        DataError: the file is missing, truncated, or its header is not IDX.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     write_idx(Path(d) / "t10k-labels-idx1-ubyte.gz", np.array([7, 2, 1], np.uint8))
        ...     read_idx(Path(d) / "t10k-labels-idx1-ubyte.gz")
        array([7, 2, 1], dtype=uint8)
    """
    path = Path(path)
    with _opened(path) as f:
        data = f.read()
    dtype, shape, header = _header(path, data)
    if len(data) != header + math.prod(shape) * dtype.itemsize:
        raise _wrong_size(path, len(data), shape, header, dtype)
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def read_chunks(path: Path, size: int) -> Iterator[np.ndarray]:
    """The records of an IDX file (images, labels) read `size` at a time, the payload's length checked as it goes:
    memory holds one chunk, whatever the file's length.

    Raises:
        DataError: as `read_idx`, when the chunk that reaches the problem is read.
    """
    with _opened(path) as f:
        first = f.read(4)
        dtype, shape, header = _header(path, first + f.read(4 * first[3]) if len(first) == 4 else first)
        record = math.prod(shape[1:]) * dtype.itemsize
        done = 0
        while done < shape[0]:
            count = min(size, shape[0] - done)
            data = f.read(count * record)
            if len(data) != count * record:
                raise _wrong_size(path, header + done * record + len(data), shape, header, dtype)
            done += count
            yield np.frombuffer(data, dtype=dtype).reshape(count, *shape[1:])
        extra = sum(len(block) for block in iter(lambda: f.read(1 << 20), b""))
        if extra:
            raise _wrong_size(path, header + done * record + extra, shape, header, dtype)


def _declared(path: Path) -> tuple[int, ...]:
    """The shape an IDX file's header declares, read without its payload."""
    with _opened(path) as f:
        first = f.read(4)
        return _header(path, first + f.read(4 * first[3]) if len(first) == 4 else first)[1]


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Writes a uint8 or int8 array as an IDX file, gzipped when the name ends in `.gz`."""
    path = Path(path)
    array = np.ascontiguousarray(array)
    header = bytes([0, 0, _CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(payload)


def dataset_name(directory: Path) -> str:
    """The dataset named by IDX file prefixes (emnist-balanced-train-images-... is emnist_balanced), else ""."""
    if not directory.is_dir():
        return ""
    names = {(m := _PREFIX.match(n["prefix"])) and (m["name"] or "") for n in
             (_IDX_NAME.match(p.name) for p in directory.iterdir()) if n}
    return names.pop().lower().replace("-", "_") if len(names) == 1 and None not in names else ""


def find_files(directory: Path) -> dict[str, tuple[Path, Path | None]]:
    """The (images, labels) file pair of each split in an IDX directory: train, test, or one other prefix.
    Images without a labels file are unlabeled (serving traffic, for drift and predict): labels None.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "today-images-idx3-ubyte"):
        ...         (Path(d) / name).touch()
        ...     {split: [p and p.name for p in pair] for split, pair in find_files(Path(d)).items()}
        {'test': ['t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'], 'today': ['today-images-idx3-ubyte', None]}
    """
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
        if "images" not in files:
            raise DataError(f"{files['labels']}: no matching images file in {directory}")
        named = _PREFIX.match(prefix)
        split = _SPLIT_ALIASES[named["split"].lower()] if named else prefix or "all"
        pairs[split] = (files["images"], files.get("labels"))
    return pairs


@dataclass(frozen=True)
class IdxSplit:
    """One split's IDX files, read a chunk at a time (`chunks`), so that no step holds the whole split; made by
    `open_pair`, which checks the headers. Duck-types `formats.Split` for ingest."""

    images_path: Path
    labels_path: Path | None
    count: int
    shape: tuple[int, ...]  # of one image: rows, cols

    @property
    def labelled(self) -> bool:
        return self.labels_path is not None

    def chunks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Images [n <= size, rows, cols] and their int64 labels (None without a labels file), in file order."""
        labels = self.label_chunks(size) if self.labelled else itertools.repeat(None)
        yield from zip(read_chunks(self.images_path, size), labels)

    def label_chunks(self, size: int) -> Iterator[np.ndarray]:
        """The int64 labels alone, `size` at a time (none without a labels file)."""
        if self.labelled:
            yield from (labels.astype(np.int64) for labels in read_chunks(self.labels_path, size))


def open_pair(images_path: Path, labels_path: Path | None) -> IdxSplit:
    """One split's images [N, rows, cols] and labels [N] (no labels file: unlabeled), their headers checked to be
    of those ranks and to agree in count; the payloads are read later, by `IdxSplit.chunks`."""
    shape = _declared(images_path)
    if len(shape) != 3:
        raise DataError(f"{images_path}: expected images of rank 3 [count, rows, cols], got shape {shape}")
    if 0 in shape[1:]:
        raise DataError(f"{images_path}: images of {shape[1]}x{shape[2]} pixels; expected at least "
                        "one row and one column")
    if labels_path is not None:
        labels = _declared(labels_path)
        if len(labels) != 1:
            raise DataError(f"{labels_path}: expected labels of rank 1 [count], got shape {labels}")
        if shape[0] != labels[0]:
            raise DataError(f"{images_path}: {shape[0]} images but {labels_path.name} has {labels[0]} labels")
    return IdxSplit(images_path, labels_path, shape[0], shape[1:])


def load_idx(directory: Path) -> formats.Loaded:
    """Opens train and test splits from an IDX directory, or its single split: train, test, or `all` for a
    prefix that names no split. Their images are read when ingest streams them."""
    pairs = find_files(directory)
    if "train" in pairs and "test" in pairs:
        splits = {split: open_pair(*pairs[split]) for split in ("train", "test")}
    elif len(pairs) == 1:
        [(name, pair)] = pairs.items()
        splits = {name if name in ("train", "test") else "all": open_pair(*pair)}
    else:
        raise DataError(f"{directory}: expected train and test IDX files or a single split, "
                        f"found splits {', '.join(sorted(pairs))}")
    return formats.Loaded(splits, ())  # numbered labels: the schema says how many classes there are
