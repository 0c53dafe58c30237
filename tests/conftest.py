"""Shared fixtures: a seed and tiny generated MNIST-format IDX datasets (no network, no real data)."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from pipeline.idx import write_idx

SEED = 1234


def make_images(labels: np.ndarray, rng: np.random.Generator, side: int = 28) -> np.ndarray:
    """Learnable images: class k has a bright bar in row band k, over faint noise."""
    images = rng.integers(0, 40, size=(len(labels), side, side), dtype=np.uint8)
    for i, label in enumerate(labels):
        row = 2 + 2 * (int(label) % 10)
        images[i, row:row + 2, 4:side - 4] = rng.integers(180, 256, size=(2, side - 8), dtype=np.uint8)
    return images


def write_dataset(directory: Path, splits: dict[str, int], seed: int = SEED, side: int = 28,
                  gz: bool = True) -> Path:
    """Writes `<prefix>-images-idx3-ubyte[.gz]` and `<prefix>-labels-idx1-ubyte[.gz]` per split."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, count in splits.items():
        labels = (np.arange(count) % 10).astype(np.uint8)
        rng.shuffle(labels)
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", make_images(labels, rng, side))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return directory


@pytest.fixture
def seed() -> int:
    return SEED


@pytest.fixture
def idx_dir(tmp_path) -> Path:
    """A tiny MNIST-format dataset: 128 train and 64 test examples, gzipped."""
    return write_dataset(tmp_path / "data", {"train": 128, "t10k": 64})
