"""Schema: the curated schema of the dataset when `schemas/` has one, else inferred from train statistics."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from components import image_features
from components.libs import load_tfdv
from components.statistics import Statistics
from engine.artifacts import Artifact
from engine.component import Component
from engine.errors import DataError, first_line
from engine.settings import param

IMAGE, LABEL = "image", "label"
PIXELS, CLASSES = 28 * 28, 10  # CLASSES: when neither the schema nor the data says otherwise
NAMES_TAG = "class_names"  # the label's annotation with this tag lists the class names, in label order
# Minimum effect sizes (drift is an effect shown to exceed them, components.drift): 2% of the test images
# of Fashion-MNIST shifted by 3 pixels measures 0.0009 (JSD), a class at half its share 0.05 (L-infinity).
FEATURE_THRESHOLD, LABEL_THRESHOLD = 0.0005, 0.03


GENERIC = "mnist_family"


@dataclass(frozen=True)
class Schema(Artifact):
    """A TFDV schema as text protobuf; `source` is `curated:<file>` or `inferred`."""

    source: str
    kind: ClassVar[str] = "Schema"

    @property
    def path(self) -> str:
        return str(Path(self.uri) / "schema.pbtxt")

    @staticmethod
    def described(p: dict) -> str:
        return f"{p.get('source')}, fingerprint {p.get('fingerprint')}"


def curated_schema_path(schema_dir: Path, dataset_name: str, schema_file: str | None = None) -> Path | None:
    """The curated schema for a dataset: an explicit file, else `<schema_dir>/<name>.pbtxt`, else the
    generic `<schema_dir>/mnist_family.pbtxt`; None when none exists (the schema is then inferred)."""
    if schema_file:
        if not Path(schema_file).is_file():
            raise DataError(f"{schema_file}: schema file not found")
        return Path(schema_file)
    for name in (dataset_name, GENERIC):
        if name and (schema_dir / f"{name}.pbtxt").is_file():
            return schema_dir / f"{name}.pbtxt"
    return None


def load_schema(path: Path):
    """Parses a text-protobuf schema; a malformed file is a DataError naming it."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    try:
        return text_format.Parse(path.read_text(), schema_pb2.Schema())
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a valid TFDV schema ({first_line(exc)})") from None


def numbered(count: int) -> tuple[str, ...]:
    """The names of `count` classes known only by number: "0".."count-1".

    Example:
        >>> numbered(3)
        ('0', '1', '2')
    """
    return tuple(str(i) for i in range(count))


def class_names(proto) -> tuple[str, ...]:
    """The class names of a schema: its label's `class_names` annotation, else "0".."N-1" for its label domain.

    Example:
        >>> from tensorflow_metadata.proto.v0 import schema_pb2
        >>> named = {"name": "label", "annotation": {"tag": ["class_names"], "comment": ["cat", "dog"]}}
        >>> class_names(schema_pb2.Schema(feature=[named]))
        ('cat', 'dog')
        >>> class_names(schema_pb2.Schema(feature=[{"name": "label", "int_domain": {"min": 0, "max": 2}}]))
        ('0', '1', '2')
    """
    label = next((f for f in proto.feature if f.name == LABEL), None)
    if label is None:
        return numbered(CLASSES)
    if NAMES_TAG in label.annotation.tag:
        return tuple(label.annotation.comment)
    count = label.int_domain.max + 1 if label.HasField("int_domain") and label.int_domain.max else CLASSES
    return numbered(count)


def dataset_classes(examples, schema_dir: Path | None) -> tuple[str, ...]:
    """The class names an Examples' labels stand for: the data's own (folder names), else a named dataset's
    curated schema's in `schema_dir` (`fashion_mnist` read from IDX files); () for labels known only by number.
    """
    if examples.classes or not examples.labelled:
        return tuple(examples.classes)
    curated = curated_schema_path(schema_dir, examples.name) if schema_dir and examples.name else None
    return class_names(load_schema(curated)) if curated is not None else ()


def classes_of(schema: Schema) -> tuple[str, ...]:
    """The class names of a Schema artifact (what the model head, evaluation and serving signature follow)."""
    return class_names(load_schema(Path(schema.path)))


def set_classes(proto, names: tuple[str, ...]) -> None:
    """The generic rule for N classes: labels 0..N-1, named as the data names them, and an L-infinity
    threshold of 0.3 / N (0.03 for ten classes): a class at half its share is drift however many there are."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    label = next(f for f in proto.feature if f.name == LABEL)
    label.ClearField("domain")
    label.int_domain.CopyFrom(schema_pb2.IntDomain(name="class", min=0, max=len(names) - 1, is_categorical=True))
    label.annotation.ClearField("tag")
    label.annotation.ClearField("comment")
    if any(name != str(i) for i, name in enumerate(names)):
        label.annotation.tag.append(NAMES_TAG)
        label.annotation.comment.extend(names)
    threshold = round(min(LABEL_THRESHOLD, 0.3 / len(names)), 4)
    for comparator in (label.drift_comparator, label.skew_comparator):
        if comparator.HasField("infinity_norm"):
            comparator.infinity_norm.threshold = threshold


def apply_contract(schema, train_stats=None, classes: tuple[str, ...] = ()) -> None:
    """Adds what every MNIST-family dataset must satisfy and inference cannot know.

    `infer_schema` sets no value ranges and takes the label's domain from whatever values it saw,
    so an out-of-range label in the training data would pass: this fixes the contract instead, and
    sets the summary features' ranges from `train_stats` and their drift and skew thresholds.
    """
    statistics_by_name = {f.path.step[0]: f for f in train_stats.features} if train_stats else {}
    from tensorflow_metadata.proto.v0 import schema_pb2

    features = {f.name: f for f in schema.feature}
    for name in (IMAGE, LABEL):
        if name not in features:
            raise DataError(f"feature '{name}' is missing from the data (found: {', '.join(features) or 'none'})")
    image, label = features[IMAGE], features[LABEL]
    image.int_domain.CopyFrom(schema_pb2.IntDomain(name="pixel", min=0, max=255))
    image.shape.CopyFrom(schema_pb2.FixedShape(dim=[schema_pb2.FixedShape.Dim(size=PIXELS)]))
    label.shape.CopyFrom(schema_pb2.FixedShape(dim=[schema_pb2.FixedShape.Dim(size=1)]))
    del schema.string_domain[:]
    schema.ClearField("default_environment")
    schema.default_environment.extend(["TRAINING", "SERVING"])
    label.ClearField("not_in_environment")
    label.not_in_environment.append("SERVING")
    label.drift_comparator.infinity_norm.threshold = LABEL_THRESHOLD
    label.skew_comparator.infinity_norm.threshold = LABEL_THRESHOLD
    set_classes(schema, classes or numbered(CLASSES))
    for name in image_features.NAMES:
        if name in features:
            _summary_feature_contract(features[name], statistics_by_name.get(name))


def _summary_feature_contract(feature, stats) -> None:
    """The observed range widened on each side by 10% of itself, at least 2% of what the feature can hold
    (a nearly constant feature would otherwise leave no room for the next sample), and the drift and
    skew thresholds."""
    if stats is not None:
        low, high = stats.num_stats.min, stats.num_stats.max
        lowest, highest = image_features.RANGES[feature.name]
        margin = max(0.1 * (high - low), 0.02 * (highest - lowest))
        # a feature that cannot be negative is not given room below 0; a signed one keeps its margin
        feature.float_domain.min = max(0.0, low - margin) if low >= 0 else low - margin
        feature.float_domain.max = high + margin
    feature.drift_comparator.jensen_shannon_divergence.threshold = FEATURE_THRESHOLD
    feature.skew_comparator.jensen_shannon_divergence.threshold = FEATURE_THRESHOLD


def _curated_key(curated: Path | None, **_) -> str | None:
    return hashlib.sha256(curated.read_bytes()).hexdigest() if curated else None


def schema(statistics: Statistics, *, out_dir: Path, curated: Path | None, kept: bool = False,
           classes: tuple[str, ...] = ()) -> Schema:
    """Writes `<out_dir>/schema.pbtxt`: the curated schema, or one inferred from the train statistics.
    `kept`: the curated schema is the one this root's earlier runs used (its source says so). `classes`:
    the data's class names; the generic and inferred schemas take their number and names from them,
    a dataset's own curated schema keeps its own.
    """
    tfdv = load_tfdv()

    if curated is not None:
        proto = load_schema(curated)
        source = f"curated:{curated}" + (" (kept from this root's earlier runs)" if kept else "")
        if curated.stem == GENERIC and classes and any(f.name == LABEL for f in proto.feature):
            set_classes(proto, classes)
            source += f" ({len(classes)} class{'' if len(classes) == 1 else 'es'} from the data)"
    else:
        train = tfdv.load_stats_binary(statistics.path("train"))
        proto, source = tfdv.infer_schema(train, infer_feature_shape=True), "inferred"
        apply_contract(proto, train.datasets[0], classes)
    path = out_dir / "schema.pbtxt"
    tfdv.write_schema_text(proto, str(path))
    # The content, not the statistics it came from: one curated schema is one schema on any data.
    return Schema(uri=str(out_dir), fingerprint=hashlib.sha256(path.read_bytes()).hexdigest(), source=source)


def summarize(schema: Schema | None, info: dict) -> dict:
    """The run summary's `schema` section: where the schema came from."""
    return {"schema": schema and {"source": schema.source, "uri": schema.path, "classes": list(classes_of(schema))}}


def choose(schema_dir: Path, dataset_name: str, given: str | None, earlier: Path | None) -> dict:
    """The schema node's parameters: a given file first, then the root's earlier schema (a root is one
    pipeline: a new span of the same data delivered as `idx:` keeps the curated schema), then the
    dataset's curated schema, the generic one, or none (inferred)."""
    if given or earlier is None:
        return {"curated": curated_schema_path(schema_dir, dataset_name, given)}
    own = curated_schema_path(schema_dir, dataset_name)
    kept = own is None or own.resolve() != earlier.resolve()
    return {"curated": earlier, **({"kept": True} if kept else {})}  # as before when nothing changes


@dataclass(frozen=True)
class SchemaConfig:
    """Where curated schemas live; a file here overrides inference."""

    schema_dir: str | None = None  # None: the `schemas/` shipped with the project
    schema_file: str | None = param(None, flag="--schema", default_help="the one this root's earlier runs used "
                                    "when curated or given, else the dataset's curated one",
                                    help="schema file to validate against")


def schema_dir(cfg) -> Path:
    """The directory of curated schemas: the config's, else the project's `schemas/`."""
    return Path(cfg.schema.schema_dir or Path(__file__).resolve().parent.parent / "schemas")


def _params(cfg, out, metadata) -> dict:
    examples = out["ingest"]
    earlier = root_schema(metadata, cfg.root)
    return {**choose(schema_dir(cfg), examples.name, cfg.schema.schema_file, earlier), "classes": examples.classes}


def root_schema(metadata, root: str) -> Path | None:
    """The curated or given schema file the newest validated run of the pipeline at `root` used, if it is
    still there: a root is one pipeline, so its next spans keep that schema (an inferred one is not kept).
    """
    from components.validate import validated_runs  # validate imports this module

    for done in validated_runs(metadata, root):
        source = ((done.get(COMPONENT.name) or {}).get("output") or {}).get("properties", {}).get("source", "")
        if source.startswith("curated:"):
            path = Path(source.removeprefix("curated:").split(" (")[0])
            return path if path.is_file() else None
    return None

COMPONENT = Component(name="schema", fn=schema, inputs=(Statistics,), output=Schema, version="4",
                      source_key=_curated_key, settings=SchemaConfig, params=_params, summary=summarize)
