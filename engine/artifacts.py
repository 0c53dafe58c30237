"""Typed artifacts passed between components: small frozen records with a `uri` and a fingerprint."""
from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

SPLITS = ("train", "eval", "test")
RECORD = "artifact.json"  # written last into an artifact's directory: its presence means complete
RELATIVE = "uri_relative"  # in a record: its `uri` is relative to the record's directory (it moves with the root)
ARTIFACT_TYPES: dict[str, type] = {}  # kind: class, filled as artifact types are declared


def _decode(hint, value):
    """Turns JSON lists back into the tuples (of records) a frozen artifact holds."""
    if typing.get_origin(hint) is tuple:
        return tuple(_decode(typing.get_args(hint)[0], v) for v in value)
    if dataclasses.is_dataclass(hint):
        return hint(**value)
    return value


@dataclass(frozen=True)
class Artifact:
    """Base of all artifacts. `fingerprint` identifies the content, for caching and lineage."""

    uri: str
    fingerprint: str

    kind: ClassVar[str] = "Artifact"

    def __init_subclass__(cls, **kwargs):
        """Registers each artifact type by its kind, so a component module can declare its own."""
        super().__init_subclass__(**kwargs)
        ARTIFACT_TYPES[cls.kind] = cls

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Artifact":
        hints = typing.get_type_hints(cls)
        # A field added since the record was written takes its default.
        return cls(**{f.name: _decode(hints[f.name], data[f.name])
                      for f in dataclasses.fields(cls) if f.name in data})

    def intact(self) -> bool:
        """Whether the files this artifact describes are still there."""
        return (Path(self.uri) / RECORD).is_file()

    def relocated(self, uri: str) -> "Artifact":
        return dataclasses.replace(self, uri=uri)


@dataclass(frozen=True)
class Examples(Artifact):
    """Gzipped tf.Example TFRecords per split: `<uri>/<split>/data-*.tfrecord.gz`."""

    spec: str
    name: str  # dataset name for curated schemas ("" for a plain IDX directory)
    source: str
    counts: dict[str, int]
    classes: tuple[str, ...] = ()  # the data's class names, label i is classes[i] (empty: numbered labels)
    labelled: bool = True  # False: images only (checked for drift, predicted; not trained on)
    preprocessing: str = ""  # what was done to images that were not 28x28 grayscale
    inverted: bool = False  # the source's images were inverted (255 - x) into light ink on a dark background
    kind: ClassVar[str] = "Examples"

    def file_pattern(self, split: str) -> str:
        return str(Path(self.uri) / split / "data-*.tfrecord.gz")


@dataclass(frozen=True)
class Statistics(Artifact):
    """TFDV DatasetFeatureStatisticsList per split: `<uri>/<split>/FeatureStats.pb`."""

    splits: tuple[str, ...]
    kind: ClassVar[str] = "Statistics"

    def path(self, split: str) -> str:
        return str(Path(self.uri) / split / "FeatureStats.pb")


@dataclass(frozen=True)
class Schema(Artifact):
    """A TFDV schema as text protobuf; `source` is `curated:<file>` or `inferred`."""

    source: str
    kind: ClassVar[str] = "Schema"

    @property
    def path(self) -> str:
        return str(Path(self.uri) / "schema.pbtxt")


@dataclass(frozen=True)
class Anomaly:
    """One data problem: which split and feature, its TFDV type and a readable description."""

    split: str
    feature: str
    type: str
    description: str


@dataclass(frozen=True)
class Distance:
    """One feature's test between two datasets: drifted when the test rejects at its level `alpha` and the
    effect size (`distance`) reaches the schema's minimum (`threshold`)."""

    comparison: str  # e.g. "skew: train vs test", "drift: previous span train vs train"
    feature: str
    measure: str  # the effect size: "jensen_shannon_divergence", "l_infinity", "mmd2"
    distance: float  # the effect size
    threshold: float  # the minimum effect size: the schema's
    test: str  # "G-test" on shared buckets, or "MMD" on a model's embeddings
    statistic: float
    dof: int  # degrees of freedom (0: not a chi-squared statistic)
    p_value: float  # the chance of a statistic this large between samples of one distribution
    alpha: float  # the level this test was held to, its share of the check's false-positive rate
    drifted: bool


@dataclass(frozen=True)
class Anomalies(Artifact):
    """Anomalies of every split against the schema, and drift and skew distances; clean when none."""

    anomalies: tuple[Anomaly, ...]
    distances: tuple[Distance, ...] = ()
    kind: ClassVar[str] = "Anomalies"


@dataclass(frozen=True)
class HyperParameters(Artifact):
    """The best hyperparameters of a search and the table of its trials."""

    tuner: str
    values: dict[str, Any]
    trials: tuple[dict[str, Any], ...]
    search: str = ""  # fingerprint of the schema, search space and search settings: equal means reusable
    allotted: float | None = None  # seconds the search was given (0: none, under a budget); None: no limit
    weights: str = ""  # the best trial's weights, a file in uri, trained on the train split of...
    weights_examples: str = ""  # ...the Examples with this fingerprint
    kind: ClassVar[str] = "HyperParameters"


@dataclass(frozen=True)
class Model(Artifact):
    """A trained Keras model `<uri>/model.keras` and its per-epoch history."""

    history: dict[str, list[float]]
    classes: tuple[str, ...] = tuple(str(i) for i in range(10))  # output i is the class classes[i]
    plan: dict[str, Any] = field(default_factory=dict)  # schedule, epochs planned and why training ended
    kind: ClassVar[str] = "Model"

    @property
    def path(self) -> str:
        return str(Path(self.uri) / "model.keras")


@dataclass(frozen=True)
class Evaluation(Artifact):
    """Test-split metrics and the blessing decision with its reasons (one per check)."""

    accuracy: float
    loss: float
    min_accuracy: float
    blessed: bool
    reasons: tuple[str, ...]
    failed: tuple[str, ...] = ()  # the reasons of the checks that failed: why it is not blessed
    per_class: tuple[dict[str, Any], ...] = ()  # class, precision, recall, f1, support
    confusion_matrix: tuple[tuple[int, ...], ...] = ()  # rows: true class, columns: predicted
    baseline_version: int | None = None  # the serving version compared with, if any
    baseline_accuracy: float | None = None
    max_regression: float | None = None
    # The serving version's fingerprint the regression gate was decided against ("" with no baseline): push
    # re-decides it when another version serves by then.
    baseline_fingerprint: str | None = None
    baseline_broken: str = "fail"  # what a baseline that cannot be read does: "fail" the run, or is "ignore"d
    kind: ClassVar[str] = "Evaluation"


@dataclass(frozen=True)
class PushedModel(Artifact):
    """A SavedModel in the serving directory, `<serving_dir>/<version>/`; `uri` is that directory."""

    version: int
    model_fingerprint: str = ""  # the Model artifact it was exported from
    infra_check: str = ""  # what the pre-push check in a fresh process found
    recheck: str = ""  # the regression gate decided again at push against a version pushed meanwhile
    kind: ClassVar[str] = "PushedModel"

    def intact(self) -> bool:
        return (Path(self.uri) / "saved_model.pb").is_file()


def record_uri(record: dict[str, Any], directory: str | Path) -> str:
    """The uri an artifact's record (found in `directory`) names, wherever the root now is.

    A record written under the root names its uri relative to its own directory. An older record's absolute
    uri that ends in this directory's `<component>/<key>` named this very directory before it moved.
    """
    uri = record["uri"]
    if record.get(RELATIVE):
        return os.path.normpath(Path(directory) / uri)
    if Path(uri).is_absolute() and Path(uri).parts[-2:] == Path(directory).absolute().parts[-2:]:
        return str(Path(directory))
    return uri


def load(uri: str | Path) -> Artifact:
    """Reads the artifact recorded in `uri` (its `artifact.json`), its uri resolved where the record is."""
    data = json.loads((Path(uri) / RECORD).read_text())
    data["uri"] = record_uri(data, uri)
    return ARTIFACT_TYPES[data.pop("type")].from_dict(data)
