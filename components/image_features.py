"""Per-image summary features computed from the pixels, so TFDV can see what a pooled pixel list hides."""
from __future__ import annotations

import collections
from typing import Iterable

import numpy as np

INK = 128  # a pixel at or above this is ink: halving the brightness of a dataset removes all of it
VISIBLE = 32  # a pixel at or above this counts for the bounding box
# A background (mean of the outermost pixels) above this is light: dark ink on a light sheet, the opposite of
# the MNIST family. Fashion-MNIST's brightest is 107.5 (a garment touching the edges); inverted, its darkest 147.5.
LIGHT = 127
INVERTED_HINT = ("images look inverted (dark ink on a light background); set data.invert / --invert true "
                 "(or auto) to normalise them")


# name: (low, high) of the fixed histogram every split shares, so distances compare like with like.
RANGES = {
    "mean_intensity": (0.0, 255.0),
    "std_intensity": (0.0, 128.0),
    "ink_fraction": (0.0, 1.0),
    "bbox_height": (0.0, 28.0),
    "bbox_width": (0.0, 28.0),
    "center_row": (0.0, 28.0),
    "center_col": (0.0, 28.0),
    # The bounding box's centre: datasets centred by their box (Fashion-MNIST) hold it within a pixel, so
    # a few images translated by one pixel show at once (benchmarks/drift_power.py).
    "bbox_center_row": (0.0, 28.0),
    "bbox_center_col": (0.0, 28.0),
    # The image's polarity: near 0 for light ink on a dark background, near 255 when inverted.
    "background": (0.0, 255.0),
    # The brightest pixel: datasets stretched to full range (Fashion-MNIST, MNIST: 254 or 255 in every image)
    # lose it to a dimmer exposure, and to the blur of any resampling (rotation, scaling), in the image it hits.
    "max_intensity": (0.0, 255.0),
    # How far the box's centre lies from the image's (Euclidean, pixels): half a pixel at most for 91% of
    # Fashion-MNIST's images and one for 99%; pixels for digits centred by their mass (MNIST), not their box.
    "bbox_offset": (0.0, 7.0),
    # The centre of mass's column minus the box's: which way an item leans in its box (shoes toe left in
    # Fashion-MNIST); mirroring flips its sign. The 2% of Fashion-MNIST beyond 4 pixels share the end buckets.
    "mass_offset_col": (-4.0, 4.0),
}
NAMES = tuple(RANGES)
BUCKETS = 28
# Features bucketed coarser than BUCKETS: mirroring moves Fashion-MNIST's shoes (+1 to +4.7) to where almost
# nothing lies; in 1-pixel buckets that shows in a few cells, in 28 it spreads over 21 degrees of freedom
# (2% of 10,000 images mirrored: flagged in 100 of 100 batches in 1-pixel buckets, in 29 of 40 in 28).
COARSE = {"mass_offset_col": 8}


def buckets(name: str) -> int:
    """How many equal buckets the shared histogram of summary feature `name` has over its `RANGES`.

    Example:
        >>> buckets("mean_intensity"), buckets("mass_offset_col")
        (28, 8)
    """
    return COARSE.get(name, BUCKETS)


def summarize(images: np.ndarray) -> dict[str, np.ndarray]:
    """Computes every summary feature for a batch of uint8 images [N, H, W], vectorised.

    A blank image has a zero bounding box, and its centre of mass and box centre at the image centre.

    Example:
        >>> summarize(np.zeros((1, 28, 28), np.uint8))["center_row"]
        array([13.5], dtype=float32)
    """
    n, height, width = images.shape
    pixels = images.astype(np.float32)
    mass = pixels.sum(axis=(1, 2))
    safe = np.where(mass > 0, mass, 1.0)
    rows, cols = np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32)
    center_row = np.where(mass > 0, (pixels.sum(axis=2) * rows).sum(axis=1) / safe, (height - 1) / 2)
    center_col = np.where(mass > 0, (pixels.sum(axis=1) * cols).sum(axis=1) / safe, (width - 1) / 2)
    visible = images >= VISIBLE
    box_row, box_col = _middle(visible.any(axis=2)), _middle(visible.any(axis=1))
    return {
        "mean_intensity": pixels.mean(axis=(1, 2)),
        "std_intensity": pixels.std(axis=(1, 2)),
        "ink_fraction": (images >= INK).mean(axis=(1, 2), dtype=np.float32),
        "bbox_height": _extent(visible.any(axis=2)),
        "bbox_width": _extent(visible.any(axis=1)),
        "bbox_center_row": box_row,
        "bbox_center_col": box_col,
        "center_row": center_row.astype(np.float32),
        "center_col": center_col.astype(np.float32),
        "background": background(images),
        "max_intensity": images.max(axis=(1, 2)).astype(np.float32) if images.size else np.zeros(n, np.float32),
        "bbox_offset": np.hypot(box_row - (height - 1) / 2, box_col - (width - 1) / 2).astype(np.float32),
        "mass_offset_col": (center_col - box_col).astype(np.float32),
    }


def background(images: np.ndarray) -> np.ndarray:
    """The mean of each image's outermost pixels (its one-pixel frame): how light its background is.

    Example:
        >>> background(np.full((1, 28, 28), 255, np.uint8))
        array([255.], dtype=float32)
    """
    pixels = images.astype(np.float32)
    frame = pixels[:, 0, :].sum(axis=1) + pixels[:, -1, :].sum(axis=1)
    frame += pixels[:, 1:-1, 0].sum(axis=1) + pixels[:, 1:-1, -1].sum(axis=1)
    height, width = images.shape[1:]
    return (frame / max(1, 2 * width + 2 * max(0, height - 2))).astype(np.float32)


def looks_inverted(*batches: np.ndarray) -> bool:
    """Whether images are dark ink on a light background: the median `background` of all of them is above
    `LIGHT`."""
    return light_background(background(b) for b in batches if b.ndim == 3 and len(b))


def light_background(frames: Iterable[np.ndarray]) -> bool:
    """Whether the median of `background` values, given a batch at a time, is above `LIGHT`: the value np.median
    gives their concatenation, found from a count of each distinct value, so memory holds at most one count per
    possible frame sum (255 x frame pixels + 1), not one value per image.

    Example:
        >>> light_background([np.array([0.0, 200.0], np.float32), np.array([255.0], np.float32)])
        True
    """
    counts: collections.Counter = collections.Counter()
    for frame in frames:
        values, times = np.unique(np.asarray(frame, np.float32), return_counts=True)
        counts.update(dict(zip(values.tolist(), times.tolist())))
    total = sum(counts.values())
    if not total:
        return False
    middle, seen = {}, 0  # the values at the middle indices np.median averages (one index when `total` is odd)
    for value in sorted(counts):
        seen += counts[value]
        for index in ((total - 1) // 2, total // 2):
            if index < seen:
                middle.setdefault(index, value)
        if total // 2 < seen:
            break
    return float(np.mean(np.array(list(middle.values()), np.float32))) > LIGHT


def as_delivered(images: np.ndarray, inverted: bool) -> np.ndarray:
    """Images with the polarity their source had: ingest's inversion (`Examples.inverted`) undone, as a served
    model takes them.

    Example:
        >>> as_delivered(np.array([[[0, 200]]], np.uint8), True).tolist()
        [[[255, 55]]]
    """
    return 255 - images if inverted else images


def _bounds(occupied: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first and last occupied line of each image: (size, -1) when none is."""
    size, any_line = occupied.shape[1], occupied.any(axis=1)
    first = np.where(any_line, occupied.argmax(axis=1), size)
    return first, np.where(any_line, size - 1 - occupied[:, ::-1].argmax(axis=1), -1)


def _middle(occupied: np.ndarray) -> np.ndarray:
    """Midpoint of the first and last occupied line of each image; the image's centre when none is."""
    first, last = _bounds(occupied)
    return np.where(last >= 0, (first + last) / 2, (occupied.shape[1] - 1) / 2).astype(np.float32)


def _extent(occupied: np.ndarray) -> np.ndarray:
    """Span from the first to the last occupied line of each image; 0 when none is occupied."""
    first, last = _bounds(occupied)
    return np.maximum(last - first + 1, 0).astype(np.float32)
