"""Reader and writer for the IDX format of MNIST-family datasets, gzipped or raw."""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from pipeline.engine.errors import DataError

# The third byte of the magic number names the element type; MNIST-family data is uint8.
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc})") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Reads one IDX file into an array of the shape its header declares.

    Args:
        path: an IDX file, gzipped when its name ends in `.gz`.

    Returns:
        The array, e.g. uint8 of shape [60000, 28, 28] for MNIST training images.

    Raises:
        DataError: the file is missing, truncated, or its header is not IDX.

    Example:
        >>> images = read_idx("train-images-idx3-ubyte.gz")
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError(f"{path}: wrong magic number {data[:4].hex() or '(empty file)'}, "
                        "expected 0x0000 followed by a type code and a dimension count (e.g. 00000803)")
    dtype, ndim = np.dtype(_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated header: {len(data)} bytes, expected at least {header}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{path}: {len(data)} bytes, expected {expected} for shape "
                        f"{'x'.join(map(str, shape))} (truncated or padded)")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Writes a uint8 or int8 array as an IDX file, gzipped when the name ends in `.gz`.

    Example:
        >>> write_idx("t10k-labels-idx1-ubyte.gz", np.array([7, 2, 1], np.uint8))
    """
    path = Path(path)
    array = np.ascontiguousarray(array)
    header = bytes([0, 0, _CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(payload)
