"""Ingest: reads an image-classification dataset (TFDS, IDX, image folders, CSV) and writes tf.Example TFRecords."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from components import formats, idx, image_features, ingest_report, layout
from components.tfds_source import load_tfds
from components.tfrecords import write_split
from engine.artifacts import Artifact
from engine.component import Component
from engine.errors import ConfigError, DataError
from engine.failpoints import failpoint
from engine.settings import param

SPLITS = layout.SPLITS  # the splits of every Examples
# Debian packages that install real datasets offline (apt-get install dataset-fashion-mnist).
LOCAL_COPIES = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}
ALL = "all"  # the split suffix that means every example of every split
WHOLE = ("never", "single", "always")  # when ingest puts every example in the test split (see `ingest`)


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
    span_of: ClassVar[str | None] = "spec"  # each new data of one dataset spec is its next span

    def file_pattern(self, split: str) -> str:
        return str(Path(self.uri) / split / "data-*.tfrecord.gz")

    @staticmethod
    def described(p: dict) -> str:
        return (f"data fingerprint {p.get('fingerprint')}, spec {p.get('spec')}, span {p.get('span')}, "
                f"counts {p.get('counts')}")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to ingest and how to split it."""

    # A run's spec: its syntax, and data a run can train on (labelled), checked before a run is recorded.
    dataset: str = param("fashion_mnist", flag="--dataset",
                         valid=lambda spec: trainable(DatasetSpec.parse(spec, whole=True), spec),
                         help="NAME, tfds:NAME[/CONFIG], idx:DIR, folder:DIR or csv:FILE")
    eval_fraction: float = param(0.1, above=0, below=1)  # carved from train by content hash
    test_fraction: float = param(0.15, above=0, below=1)  # only for a directory that holds a single split
    tfds_data_dir: str | None = None
    # Polarity: true inverts every image (255 - x); auto those of a dataset whose median background is light
    # (dark ink on a light sheet, components.image_features.LIGHT). Recorded with the data and the model.
    invert: str = param("auto", choices=("auto", "true", "false"), flag="--invert",
                        help="polarity: true inverts every image (255 - x); auto inverts a dataset of dark ink on a "
                             "light background; recorded in the model, whose serving signature inverts its inputs "
                             "the same way")

@dataclass(frozen=True)
class DatasetSpec:
    """A parsed `--dataset` value: `NAME`, `tfds:NAME[/CONFIG]`, `idx:DIR`, `folder:DIR` or `csv:FILE|DIR`,
    each with an optional `:SPLIT`."""

    kind: str  # "tfds", "idx", "folder" or "csv"
    location: str  # TFDS name, directory or file
    name: str  # dataset name for curated schemas and thresholds ("" for a plain directory)
    split: str | None = None

    @classmethod
    def parse(cls, spec: str, whole: bool = False) -> "DatasetSpec":
        """Parses a dataset spec (`whole`: a run's, without a split).

        Example:
            >>> DatasetSpec.parse("idx:/data/mnist:test")
            DatasetSpec(kind='idx', location='/data/mnist', name='', split='test')

        Raises:
            ConfigError: the spec's syntax is wrong, or it is a path without its kind (`data/idx`).
        """
        head, _, last = spec.rpartition(":")
        split = last if head and last in (*SPLITS, ALL) else None
        body = head if split else spec
        kind, sep, rest = body.partition(":")
        if not sep:
            kind, rest = "", body
        if whole and split:
            raise ConfigError(f"dataset spec '{spec}': a run ingests a whole dataset; drop ':{split}'")
        named = re.fullmatch(r"[a-z0-9_]+(/[\w.]+)?", rest or "")
        if not kind and rest and Path(rest).exists() and (not named or "/" in rest):  # `mnist` stays TFDS's
            raise ConfigError(f"dataset spec '{spec}': a path needs its kind: {_kind_of(Path(rest))}")
        if kind in ("idx", "folder", "csv") and rest and not Path(rest).exists() and ":" in rest:
            base, _, suffix = rest.rpartition(":")
            if Path(base).exists():  # the path is there: what follows it is a split that does not exist
                raise ConfigError(f"dataset spec '{spec}': no split ':{suffix}'; expected "
                                  f":{'|:'.join((*SPLITS, ALL))} after {kind}:{base}")
        if kind == "idx" and rest:
            return cls("idx", rest, idx.dataset_name(Path(rest)), split)
        if kind in ("folder", "csv") and rest:
            return cls(kind, rest, "", split)
        if kind in ("", "tfds") and named:
            local = LOCAL_COPIES.get(rest)
            if not kind and local is not None and local.is_dir():
                return cls("idx", str(local), rest, split)
            # emnist/balanced is a dataset of its own (schemas/emnist_balanced.pbtxt); mnist/3.0.1 a version.
            base, _, config = rest.partition("/")
            return cls("tfds", rest, f"{base}_{config}" if config and not config[0].isdigit() else base, split)
        if not kind and rest and not Path(rest).exists() and ("/" in rest or "." in rest):  # a path, mistyped
            raise DataError(f"{rest}: no such file or directory")
        raise ConfigError(f"dataset spec '{spec}': expected NAME, tfds:NAME, idx:DIR, folder:DIR or csv:FILE, "
                          f"optionally followed by :{'|:'.join((*SPLITS, ALL))}")

    def load(self, tfds_data_dir: str | None = None) -> formats.Loaded:
        """Reads every split of the source with the loader of its kind."""
        if self.kind == "tfds":
            return load_tfds(self.location, tfds_data_dir)
        return {"idx": idx.load_idx, "folder": formats.load_folder, "csv": formats.load_csv}[self.kind](
            Path(self.location))


def _kind_of(path: Path) -> str:
    """What a spec that is a bare path should have said."""
    if not path.is_dir():
        return f"csv:{path} (a CSV file of label and pixel columns)"
    try:
        return f"idx:{path} (a directory of IDX files)" if idx.find_files(path) else ""
    except DataError:
        return f"folder:{path} (one sub-folder of images per class) or idx:{path} (IDX files)"


def source_fingerprint(data: DataConfig, **_) -> str:
    """What identifies the source data before reading it: the files' names and bytes, or the TFDS name."""
    spec = DatasetSpec.parse(data.dataset)
    if spec.kind == "tfds":
        return f"tfds:{spec.location}:{data.tfds_data_dir}"
    location = Path(spec.location)
    if spec.kind == "idx":
        files = [path for pair in idx.find_files(location).values() for path in pair if path is not None]
    elif location.is_dir():
        files = sorted(p for p in location.rglob("*") if p.is_file())
    elif location.is_file():
        files = [location]
    else:
        raise DataError(f"{location}: no such file or directory")
    digest = hashlib.sha256(formats.RESIZE_POLICY.encode())
    for path in files:
        digest.update(str(path.relative_to(location) if path != location else path.name).encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _unlabeled(spec: DatasetSpec) -> tuple[str, str] | None:
    """Why the data of `spec` has no labels, and what training needs instead; None when it has them."""
    where = Path(spec.location)
    if spec.kind == "folder" and where.is_dir() and formats.image_files(where) and not any(
            p.is_dir() and not p.name.startswith(".") for p in where.iterdir()):
        return "no class sub-folders", "one sub-folder per class (DIR/<class>/<image>.png)"
    if spec.kind == "csv":
        files = list(formats.csv_files(where).values())
        if all("label" not in formats.csv_header(path) for path in files):
            return f"{files[0].name} has no 'label' column", "a 'label' column"
    if spec.kind == "idx" and where.is_dir():
        pairs = list(idx.find_files(where).values())
        if all(labels is None for _, labels in pairs):
            images = pairs[0][0].name
            return (f"{images} has no labels file beside it",
                    f"the labels file ({images.replace('images', 'labels').replace('idx3', 'idx1')})")
    return None


def trainable(spec: DatasetSpec, given: str) -> DatasetSpec:
    """A run's dataset, refused as usage (ConfigError: exit 2, before a run is recorded or an image is read)
    when it holds images without labels: a folder without class sub-folders, CSV files without a label
    column, IDX images files without their labels files. Data that cannot be listed passes: ingest names it."""
    try:
        unlabeled = _unlabeled(spec)
    except (DataError, OSError):  # missing, unreadable or malformed: ingest's one-line error says what is wrong
        return spec
    if unlabeled is None:
        return spec
    why, needs = unlabeled
    raise ConfigError(f"dataset spec '{given}': images without labels ({why}): training needs labels, {needs}; "
                      f"images without labels are for `drift --current {given}` and `predict`")


def ingest(*, out_dir: Path, data: DataConfig, whole: str = "never") -> Examples:
    """Reads the dataset named by `data.dataset` and writes train, eval and test TFRecords.

    A source with train and test files keeps them; a source holding only test files (`t10k-*`, `test/`)
    is a test split, whole, and train is empty (validation blocks a run on it); a source with one other
    split is carved into train and test by content hash. Eval is carved from train. IDX files are read
    a chunk of images at a time (`layout.CHUNK`), so memory does not grow with the dataset.

    Args:
        out_dir: the artifact directory to fill.
        data: the dataset spec and split fractions.
        whole: "always": every example of every split goes to test (`SPEC:all`); "single": so does a
            source with a single split (a drift batch is compared whole); "never" (runs): as above.

    Returns:
        The Examples artifact with per-split counts and a fingerprint of the decoded content.

    Raises:
        DataError: the dataset is missing, unreadable or malformed.
    """
    spec = DatasetSpec.parse(data.dataset)
    if spec.split:
        raise DataError(f"dataset spec '{data.dataset}': a run ingests a whole dataset; drop ':{spec.split}'")
    if whole not in WHOLE:
        raise DataError(f"ingest: whole '{whole}', expected one of {', '.join(WHOLE)}")
    loaded = spec.load(data.tfds_data_dir)
    source = f"tfds:{spec.location}" if spec.kind == "tfds" else f"{spec.kind}:{Path(spec.location).resolve()}"
    splits = dict(loaded.splits)
    if len({s.labelled for s in splits.values()}) > 1:
        raise DataError(f"dataset spec '{data.dataset}': some splits have labels and some do not "
                        f"(labelled: {', '.join(n for n, s in splits.items() if s.labelled)})")
    # Polarity is decided on the whole source, so that every split (and the model) sees the same images.
    inverted = data.invert == "true" or (data.invert == "auto" and image_features.light_background(
        image_features.background(images) for s in splits.values() for images, _ in s.chunks(layout.CHUNK)))
    # Each split is streamed from the source a chunk at a time: what memory holds does not grow with the data.
    labelled = next(iter(splits.values())).labelled
    parts = layout.assign(splits, whole, data.test_fraction, data.eval_fraction, inverted)
    digest, counts = hashlib.sha256(), {}
    for code, split in enumerate(SPLITS):
        counts[split] = layout.count(parts[split], code)
        digest.update(f"{split}:{(counts[split], *parts[split][0][0].shape)}".encode())
        write_split(_hashed(layout.rows(parts[split], code, inverted), digest), counts[split], out_dir / split)
        for labels in layout.labels(parts[split], code):  # after the split's images, as when it was read whole
            digest.update(labels.tobytes())
        if not labelled:
            digest.update(b"unlabeled")
        failpoint("ingest.split")
    return Examples(uri=str(out_dir), fingerprint=digest.hexdigest(), spec=data.dataset, name=spec.name,
                    source=source, counts=counts, classes=loaded.classes, labelled=labelled,
                    preprocessing=loaded.preprocessing, inverted=inverted)


def _hashed(chunks, digest):
    """The chunks, each image's bytes added to `digest` as it passes."""
    for images, labels in chunks:
        digest.update(np.ascontiguousarray(images).tobytes())
        yield images, labels


def summarize(examples: Examples | None, info: dict) -> dict:
    """The run summary's `dataset` section."""
    return {"dataset": examples and {"spec": examples.spec, "source": examples.source,
                                     "fingerprint": examples.fingerprint, "counts": examples.counts,
                                     "labelled": examples.labelled, "classes": list(examples.classes),
                                     "inverted": examples.inverted,
                                     **({"preprocessing": examples.preprocessing} if examples.preprocessing else {})}}


# Version 4: a source holding only test files is that test split, whole. 5: the `background` feature, polarity.
# 6: `max_intensity`, `bbox_offset`, `mass_offset_col`.
COMPONENT = Component(name="ingest", fn=ingest, inputs=(), output=Examples, version="6", source_key=source_fingerprint,
                      settings=DataConfig, section="data",
                      params=lambda cfg, out, metadata: {"data": cfg.data},
                      summary=summarize, report=ingest_report.report_section)
