"""The drift baseline a pushed version carries: what its model and the summary features made of its run's data.

With it, `drift --serving-dir DIR --current SPEC` needs no baseline dataset: the data the version was built
from, seen once at push, is the baseline of every later check: the summary features' shared-bucket
histograms of every split (as large a baseline as the run had, so that small minimum effects can be
shown), and the model's view of its held-out images (eval and test): its predictions with their labels,
so its confusion, and a sample of its embeddings.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components import drift, image_features, model_drift
from engine.errors import DataError

BASELINE = "drift_baseline.npz"
IMAGES = 20_000  # held-out images the baseline keeps predictions of
SPLIT_IMAGES = 200_000  # images of each split the histograms count: a bound on what push holds in memory
HELD_OUT = ("eval", "test")  # splits the model did not fit its weights to (eval picked the epoch kept, no more)


@dataclass(frozen=True)
class Stored:
    """A version's drift baseline: the model's outputs on its held-out images and their labels, and the summary
    features' and label's histograms of all its run's images as delivered."""

    probabilities: np.ndarray  # [N, C]
    embeddings: np.ndarray  # [<= MMD_SAMPLE, D]
    labels: np.ndarray  # [N]
    histograms: dict[str, np.ndarray]
    dataset: str = ""  # the run's dataset name, whose curated schema the checks then take

    @property
    def count(self) -> int:
        """The images the histograms count."""
        return int(max(counts.sum() for counts in self.histograms.values()))

    def statistics(self):
        """The histograms as a DatasetFeatureStatistics, as `drift.fixed_histogram` reads a dataset's."""
        from tensorflow_metadata.proto.v0 import statistics_pb2

        stats = statistics_pb2.DatasetFeatureStatistics(num_examples=self.count)
        for name, counts in self.histograms.items():
            feature = stats.features.add()
            feature.path.step.append(name)
            custom = feature.custom_stats.add(name=drift.HISTOGRAM)
            for value in counts:
                custom.histogram.buckets.add(sample_count=float(value))
        return stats


def save(version: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], inverted: bool, dataset: str = "",
         seed: int = 0) -> None:
    """Writes `<version>/drift_baseline.npz` from the run's `splits` (name: images [N, 784] as the model
    trained on them, inverted when its data was, and labels [N]) of `dataset`, with the model
    `<version>/model.keras`."""
    held = [splits[name] for name in HELD_OUT if name in splits and len(splits[name][0])]
    images = np.concatenate([x for x, _ in held])[:IMAGES] if held else np.zeros((0, 784), np.uint8)
    labels = np.concatenate([y for _, y in held])[:IMAGES] if held else np.zeros((0,), np.int64)
    probabilities, embeddings = model_drift.outputs(model_drift.load_model(version), images)
    sample = np.random.default_rng(seed).permutation(len(embeddings))[:model_drift.MMD_SAMPLE]
    every = [x for x, _ in splits.values() if len(x)]
    delivered = image_features.as_delivered(np.concatenate(every).reshape(-1, 28, 28), inverted)
    counts = drift.histograms(image_features.summarize(delivered))
    known = np.concatenate([y for _, y in splits.values()])
    counts[drift.LABEL] = drift.histograms({drift.LABEL: known[known >= 0].astype(np.float64)})[drift.LABEL]
    with open(version / BASELINE, "wb") as out:
        np.savez_compressed(out, probabilities=probabilities.astype(np.float32),
                            embeddings=embeddings[sample].astype(np.float32), labels=labels.astype(np.int64),
                            dataset=np.array(dataset), **{f"histogram_{name}": value for name, value in counts.items()})


def load(version: str | Path) -> Stored:
    """The drift baseline of a pushed version.

    Raises:
        DataError: the version has none (pushed before versions carried one) or it cannot be read.
    """
    import zipfile
    import zlib

    path = Path(version) / BASELINE
    try:
        with np.load(path) as data:
            stored = Stored(data["probabilities"].astype(np.float64), data["embeddings"].astype(np.float64),
                            data["labels"], {key[len("histogram_"):]: data[key].astype(np.float64)
                                             for key in data.files if key.startswith("histogram_")},
                            str(data["dataset"]) if "dataset" in data.files else "")
    except FileNotFoundError:
        raise DataError(f"{version}: holds no drift baseline ({BASELINE}: pushed before versions carried one); "
                        "pass --baseline SPEC") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: not a drift baseline ({type(exc).__name__}: {exc}); pass --baseline SPEC") from None
    shapes = (stored.probabilities.ndim, stored.embeddings.ndim, stored.labels.ndim)
    edges = drift.boundaries()
    buckets = all(name in edges and len(counts) == len(edges[name]) - 1 for name, counts in stored.histograms.items())
    if shapes != (2, 2, 1) or len(stored.labels) != len(stored.probabilities) or not stored.histograms or not buckets:
        raise DataError(f"{path}: not a drift baseline (probabilities {stored.probabilities.shape}, labels "
                        f"{stored.labels.shape}, {len(stored.histograms)} histograms); pass --baseline SPEC")
    return stored
