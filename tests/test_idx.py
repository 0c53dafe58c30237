"""Tests of the IDX reader and writer, including malformed files."""
import gzip

import numpy as np
import pytest

from components.idx import open_pair, read_chunks, read_idx, write_idx
from engine.errors import DataError


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_round_trip(tmp_path, name):
    array = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    write_idx(tmp_path / name, array)
    np.testing.assert_array_equal(read_idx(tmp_path / name), array)


def test_wrong_magic_number_names_file(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(b"\x12\x34\x08\x01" + (3).to_bytes(4, "big") + b"\x01\x02\x03")
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: wrong magic number 12340801"):
        read_idx(path)


def test_truncated_gzip_names_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, np.zeros((50, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: not a readable gzip file"):
        read_idx(path)


def test_payload_shorter_than_header_declares(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (10, 28, 28)) + bytes(100))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: 116 bytes, expected 7856 for shape 10x28x28"):
        read_idx(path)


def test_a_header_of_impossible_dimensions_says_so(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (4294967295, 65535, 65535)))
    with pytest.raises(DataError, match=r"^.*train-images-idx3-ubyte: impossible header: its dimensions "
                                        r"4294967295x65535x65535 make 1.84e\+19 bytes, more than any file or array "
                                        r"holds; the file is corrupt or not IDX$"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope-idx1-ubyte: file not found"):
        read_idx(tmp_path / "nope-idx1-ubyte")


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_read_in_chunks_gives_the_array_a_chunk_at_a_time(tmp_path, name):
    array = np.random.default_rng(0).integers(0, 256, (23, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / name, array)
    chunks = list(read_chunks(tmp_path / name, 5))
    assert [len(c) for c in chunks] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.concatenate(chunks), read_idx(tmp_path / name))


@pytest.mark.parametrize("payload,size", [(7856 - 16 - 100, 7756), (7856 - 16 + 3, 7859)])
def test_a_payload_cut_short_or_padded_is_named_by_the_chunk_that_reaches_it(tmp_path, payload, size):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (10, 28, 28)) + bytes(payload))
    with pytest.raises(DataError, match=rf"^\S*t10k-images-idx3-ubyte.gz: {size} bytes, expected 7856 for shape "
                                        r"10x28x28 \(truncated or padded\)$"):
        list(read_chunks(path, 4))


def test_a_pair_is_checked_from_its_headers_and_read_in_chunks(tmp_path):
    images = np.arange(9 * 28 * 28, dtype=np.uint8).reshape(9, 28, 28)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(9, dtype=np.uint8))
    split = open_pair(tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz")
    assert (split.count, split.shape, split.labelled) == (9, (28, 28), True)
    pairs = list(split.chunks(4))
    assert [len(i) for i, _ in pairs] == [4, 4, 1] and all(labels.dtype == np.int64 for _, labels in pairs)
    np.testing.assert_array_equal(np.concatenate([i for i, _ in pairs]), images)
    assert np.concatenate(list(split.label_chunks(2))).tolist() == list(range(9))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(8, dtype=np.uint8))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: 9 images but train-labels-idx1-ubyte.gz has 8"):
        open_pair(tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz")
