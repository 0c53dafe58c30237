"""Shows the per-slice gate catching a weakness the overall gate misses, on Fashion-MNIST; prints one JSON object.

    python benchmarks/slices.py [--epochs 2] [--seed 0]

Model A, the serving one: the reference CNN trained for `--epochs` on 54,000 training images. Each candidate
B is A trained one epoch more, the way a retraining would, but on training data with one slice removed (its
images never seen in that epoch): the darkest quarter, the most off-centre quarter, or the smallest boxes
(quarters by the training images' quartiles), and, as a control, on all of it. Every candidate is judged
against A on the 10,000 test images by evaluate's own gates: the overall regression gate (max_regression
0.005) and the per-slice gate (max_slice_regression 0.03, on bounds that hold over all slices at once). For
each: the overall change, the slice that lost most with its paired 95% interval, and both gates' verdicts.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SOURCE = Path("/usr/share/datasets/fashion-mnist")
MAX_REGRESSION, MAX_SLICE_REGRESSION = 0.005, 0.03
# candidate: (summary feature, which quarter of the training images is left out of B's extra epoch)
REMOVED = {"all data (control)": None, "darkest quarter removed": ("mean_intensity", 0),
           "most off-centre quarter removed": ("bbox_offset", 3), "smallest boxes removed": ("bbox_height", 0)}


def _model(seed: int):
    import keras

    from components.cnn import REFERENCE, build_model

    keras.utils.set_random_seed(seed)
    return build_model(REFERENCE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="A's training epochs (the reference recipe's 2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import keras

    from components import schema, slices
    from components.evaluate import regression
    from components.idx import read_idx

    started = time.monotonic()
    train_x, train_y = (read_idx(SOURCE / f"train-{k}-idx{d}-ubyte.gz") for k, d in (("images", 3), ("labels", 1)))
    test_x, test_y = (read_idx(SOURCE / f"t10k-{k}-idx{d}-ubyte.gz") for k, d in (("images", 3), ("labels", 1)))
    train_x, train_y = train_x[:54000], train_y[:54000]
    flat, onehot = train_x.reshape(len(train_x), -1), np.eye(10)[train_y]
    a = _model(args.seed)
    a.fit(flat, onehot, epochs=args.epochs, batch_size=128, verbose=0)
    weights = a.get_weights()
    ours = a.predict(test_x.reshape(len(test_x), -1), batch_size=1024, verbose=0).argmax(1) == test_y
    classes = schema.class_names(schema.load_schema(REPO / "schemas" / "fashion_mnist.pbtxt"))
    found, masks = slices.define(test_x, test_y, classes, 200)
    result = {"a": {"epochs": args.epochs, "accuracy": round(float(ours.mean()), 4)}, "candidates": {}}
    for name, removed in REMOVED.items():
        keep = np.ones(len(train_x), bool)
        if removed is not None:  # the training images' quarter, as evaluate slices the test images
            described, quarters = slices.define(train_x, train_y, classes, 1, (removed[0],))
            wanted = f"{removed[0]}: {slices.QUARTERS[removed[1]]}"
            keep = ~next(m for d, m in zip(described, quarters) if d["name"] == wanted)
        b = _model(args.seed)
        b.set_weights(weights)
        b.fit(flat[keep], onehot[keep], epochs=1, batch_size=128, verbose=0)
        right = b.predict(test_x.reshape(len(test_x), -1), batch_size=1024, verbose=0).argmax(1) == test_y
        measured = slices.measure(found, masks, right, ours)
        overall_ok, overall = regression(float(right.mean()), float(ours.mean()), "A", MAX_REGRESSION)
        checks = slices.gate(measured, masks, right, ours, None, MAX_SLICE_REGRESSION, "A")
        worst = min((s for s in measured if not s.get("too_small")), key=lambda s: s["change"])
        result["candidates"][name] = {
            "training_images": int(keep.sum()), "accuracy": round(float(right.mean()), 4),
            "overall_change": round(float(right.mean() - ours.mean()), 4), "overall_gate_passes": overall_ok,
            "slice_gate_passes": all(ok for ok, _ in checks),
            "worst_slice": {k: worst[k] for k in ("name", "n", "accuracy", "baseline_accuracy", "change",
                                                   "change_low", "change_high")},
            "reasons": [overall] + [reason for _, reason in checks]}
        keras.backend.clear_session()
    result["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
