"""Measures the drift gate on Fashion-MNIST: clean comparisons and six corruptions of the test split; prints JSON.

    python benchmarks/drift_cases.py [--root DIR]

Each case is a directory holding the train files and a (corrupted) test split, compared by
`python -m pipeline drift --baseline fashion_mnist:train --current idx:DIR:test`. A clean case must
not drift; every corruption must drift on the feature it affects.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SOURCE = Path("/usr/share/datasets/fashion-mnist")


def cases(images: np.ndarray, labels: np.ndarray, rng) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """name: (images, labels, the feature expected to drift, or "" for none)."""
    half = rng.permutation(len(labels))[: len(labels) // 2]
    blank = images.copy()
    blank[rng.random(len(images)) < 0.1] = 0
    shifted = images.copy()
    chosen = rng.random(len(images)) < 0.2
    moved = np.zeros_like(shifted[chosen])
    moved[:, :, 6:] = shifted[chosen][:, :, :-6]
    shifted[chosen] = moved
    keep = labels != 3
    return {
        "test": (images, labels, ""),
        "random_half_of_test": (images[half], labels[half], ""),
        "inverted": (255 - images, labels, "mean_intensity"),
        "brightness_halved": (images // 2, labels, "ink_fraction"),
        "one_class_removed": (images[keep], labels[keep], "label"),
        "every_label_one_class": (images, np.zeros_like(labels), "label"),
        "blank_10_percent": (blank, labels, "mean_intensity"),
        "shifted_6px_20_percent": (shifted, labels, "center_col"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="cache root for the drift command")
    args = parser.parse_args()
    from components.idx import read_idx, write_idx

    images, labels = read_idx(SOURCE / "t10k-images-idx3-ubyte.gz"), read_idx(SOURCE / "t10k-labels-idx1-ubyte.gz")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or str(Path(tmp) / "root")
        for name, (x, y, expected) in cases(images, labels, np.random.default_rng(0)).items():
            directory = Path(tmp) / name
            directory.mkdir()
            for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
                os.symlink(SOURCE / f, directory / f)
            write_idx(directory / "t10k-images-idx3-ubyte.gz", x)
            write_idx(directory / "t10k-labels-idx1-ubyte.gz", y.astype(np.uint8))
            proc = subprocess.run([sys.executable, "-m", "pipeline", "drift", "--baseline", "fashion_mnist:train",
                                   "--current", f"idx:{directory}:test", "--root", root, "--json"],
                                  cwd=REPO, capture_output=True, text=True)
            report = json.loads(proc.stdout)
            drifted = [d["feature"] for d in report["distances"] if d["drifted"]]
            results[name] = {"exit": proc.returncode, "drifted": drifted, "expected": expected or None,
                             "ok": (expected in drifted and proc.returncode == 3) if expected
                             else (not drifted and proc.returncode == 0),
                             "distances": {d["feature"]: d["distance"] for d in report["distances"]}}
    print(json.dumps({"benchmark": "drift_cases", "all_ok": all(r["ok"] for r in results.values()),
                      "cases": results}, indent=2))


if __name__ == "__main__":
    main()
