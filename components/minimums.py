"""Minimum effect sizes measured from data: the natural difference between two independent clean samples."""
from __future__ import annotations

import math
import textwrap

from components.drift import comparators, fixed_histogram
from components.drift_tests import effect_upper_bound

LEVEL = 0.01  # the bound's confidence is 1 - LEVEL: a clean batch's true effect stays under it
# A minimum of 0 would make the test one of equality, alarming on trivial differences in huge batches; the
# floors sit below every bound measured on Fashion-MNIST (JSD 0.00013, L-infinity 0.011).
FLOOR = {"jensen_shannon_divergence": 0.0001, "l_infinity": 0.005}


def rounded_up(value: float, digits: int = 2) -> float:
    """`value` rounded up to `digits` significant digits.

    Example:
        >>> rounded_up(0.000123), rounded_up(0.0107)
        (0.00013, 0.011)
    """
    if value <= 0:
        return 0.0
    step = 10 ** (math.floor(math.log10(value)) - digits + 1)
    return round(math.ceil(round(value / step, 6)) * step, 12)


def measured(first, second, schema) -> dict[str, float]:
    """feature: its minimum effect, the upper bound at 1 - LEVEL of the effect between two statistics of
    independent clean samples (`first` and `second`, DatasetFeatureStatistics: train and test), rounded
    up, at least FLOOR; for every feature of `schema` with a drift comparator that both hold."""
    found = {}
    for name, (measure, _) in comparators(schema).items():
        p, q = fixed_histogram(first, name), fixed_histogram(second, name)
        if p is not None and q is not None and p.sum() and q.sum():
            found[name] = max(FLOOR[measure], rounded_up(effect_upper_bound(measure, p, q, LEVEL)))
    return found


def apply(schema, minimums: dict[str, float]) -> None:
    """Sets the drift and skew comparators' thresholds of `schema` to `minimums`."""
    for feature in schema.feature:
        if feature.name in minimums:
            for comparator in (feature.drift_comparator, feature.skew_comparator):
                for kind in ("jensen_shannon_divergence", "infinity_norm"):
                    if comparator.HasField(kind):
                        getattr(comparator, kind).threshold = minimums[feature.name]


def provenance(minimums: dict[str, float], first: str, second: str) -> str:
    """Comment lines for a schema file saying where its minimum effects came from.

    Example:
        >>> print(provenance({"label": 0.011}, "train (60,000 images)", "test (10,000)"))
        # Minimum effects, measured: the 99% upper bound of each feature's effect between train (60,000 images) and
        # test (10,000), rounded up, at least JSD 0.0001 and L-infinity 0.005: label 0.011.
    """
    listed = ", ".join(f"{name} {value:g}" for name, value in minimums.items())
    text = (f"Minimum effects, measured: the {1 - LEVEL:.0%} upper bound of each feature's effect between {first} "
            f"and {second}, rounded up, at least JSD {FLOOR['jensen_shannon_divergence']:g} and L-infinity "
            f"{FLOOR['l_infinity']:g}: {listed}.")
    return textwrap.fill(text, 110, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False,
                         break_long_words=False)


def drafted(text: str, train, test, spec: str) -> str:
    """A draft schema's `text` with its minimum effects measured between the `train` and `test` statistics of
    dataset `spec`, and the comment saying so; the defaults, and a comment saying why, without test images."""
    if test is None or not test.num_examples:
        return ("# Minimum effects: the defaults; the data has no test split to measure the natural difference "
                "between\n# two clean samples (see components/minimums.py).\n" + text)
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    proto = text_format.Parse(text, schema_pb2.Schema())
    found = measured(train, test, proto)
    apply(proto, found)
    return (provenance(found, f"{spec} train ({train.num_examples:,} images)", f"test ({test.num_examples:,})")
            + "\n" + text_format.MessageToString(proto))
