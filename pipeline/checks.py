"""The `validate` and `drift` commands: checks of a dataset on its own, or against a baseline."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from components import drift_baseline, image_features, ingest, minimums, model_drift, schema, validate
from components.versions import model_info
from components.drift import check_verdict, comparators, compare, decide, fixed_histogram, moved_bucket
from components.drift_report import drift_html
from components.libs import load_tfdv
from components.ingest import DataConfig
from components.validate import Anomaly
from pipeline.config import Config
from engine.errors import ConfigError, DataError
from engine.dag import Resolver
from engine.runner import Runner
from pipeline.definition import PRODUCTION


def through(last: str, cfg, runner: Runner, **own: dict[str, Any]) -> dict[str, Any]:
    """Runs a check as a slice of the production pipeline: its nodes up to `last` that `runner` has not run
    yet, in order, each fed as the declaration wires it and with its declared parameters unless the check
    gives its own (`own[node]`). A resolver asks about earlier runs of a root's pipeline: a check, which
    has none, gets nothing from it. Returns the outputs by node: `through("statistics", cfg, Runner(root),
    ingest={"data": DataConfig("idx:/data/new")})["statistics"]` is that data's statistics.
    """
    for name in PRODUCTION.between(None, last):
        node = PRODUCTION.node[name]
        if name not in runner.outputs:
            inputs = tuple(None if isinstance(ref, Resolver) else runner.outputs[ref] for ref in node.inputs)
            runner(node.component, *inputs, **own[name] if name in own else node.params(cfg, runner.outputs, None))
    return runner.outputs


def statistics_for(spec: str, cfg, invert: str = "false"):
    """DatasetFeatureStatistics of a split: `SPEC[:SPLIT]` (default train, or every example of a source that
    has a single split; `:all` every example) or a saved statistics file.

    Returns the statistics, the dataset name (for its curated schema; "" for a file), the file pattern
    of the split's examples (None for a file), the class names its labels stand for the data's own
    (folder names), else its curated schema's in `schema_dir` (Fashion-MNIST's, "0".."9"); none for
    a file, unlabeled data or labels known only by number ("0".."9": an IDX or CSV file); and whether
    its examples were inverted (with `invert` "auto" or "true").
    """
    tfdv = load_tfdv()
    if Path(spec).is_file():
        stats = None
        for load in (tfdv.load_stats_binary, tfdv.load_statistics):  # a binary proto, or TFRecord
            try:
                stats = load(spec)
                break
            except Exception:  # TFDV raises several kinds for a file that is not in its format
                continue
        if stats is None:
            raise DataError(f"{spec}: not a TFDV statistics file")
        if not stats.datasets:
            raise DataError(f"{spec}: holds no dataset statistics")
        return stats.datasets[0], "", None, (), False
    split, examples, stats = _ingest_and_describe(spec, cfg, Runner(cfg.root), batch=True, invert=invert)
    classes = schema.dataset_classes(examples, cfg.schema_dir)
    named = tuple(classes) != schema.numbered(len(classes))  # labels known only by number name no class
    return (tfdv.load_stats_binary(stats.path(split)).datasets[0], examples.name, examples.file_pattern(split),
            tuple(classes) if named else (), examples.inverted)


def same_classes(baseline: tuple[str, tuple[str, ...]], current: tuple[str, tuple[str, ...]]) -> Anomaly | None:
    """A `CLASS_NAMES` anomaly, listing both, when labelled datasets name other classes (or the same ones in
    another order): label i of one is not label i of the other, so no label statistic compares them.

    Example:
        >>> same_classes(("folder:a", ("cat", "dog")), ("folder:b", ("dog", "cat"))).type
        'CLASS_NAMES'
        >>> same_classes(("folder:a", ("cat", "dog")), ("folder:b", ("cat", "dog"))) is None
        True
    """
    (base_spec, base), (spec, names) = baseline, current
    if not (base and names) or tuple(base) == tuple(names):
        return None
    how = "the same classes in another order" if sorted(base) == sorted(names) else "other classes"
    return Anomaly("current", schema.LABEL, "CLASS_NAMES", f"{spec}'s labels stand for {how} than {base_spec}'s: "
                   f"{', '.join(names)} vs {', '.join(base)}; name the class folders as the baseline's classes to "
                   "compare them")


def _ingest_and_describe(spec: str, cfg, runner: Runner, batch: bool = False, invert: str = "false"):
    """Ingests the dataset of `SPEC[:SPLIT]` and computes its statistics; returns (split, both).

    The split is the one named; `:all` is every example (ingested into test). Without a name it is None,
    or with `batch` (a drift comparison) train, or test holding everything when the source has one split.
    `invert` as `data.invert`, except that "false" (the checks' default) sees the data as delivered.
    """
    if invert not in ("auto", "true", "false"):
        raise ConfigError(f"invert {invert!r}: expected one of auto, true, false")
    parsed = ingest.DatasetSpec.parse(spec)
    whole = spec[: -len(parsed.split) - 1] if parsed.split else spec
    mode = "always" if parsed.split == ingest.ALL else "single" if batch and not parsed.split else None
    # The run's own layout is the default: passed only when it differs, so a run's cached ingest is reused.
    layout = {"whole": mode} if mode else {}
    examples = through("ingest", cfg, runner, ingest={
        "data": DataConfig(dataset=whole, **({"invert": invert} if invert == "true" else {})), **layout})["ingest"]
    if examples.inverted and invert == "false":  # as delivered: inverted images are what a check must report
        examples = runner(ingest.COMPONENT, data=DataConfig(dataset=whole, invert="false"), **layout)
    split = "test" if parsed.split == ingest.ALL else parsed.split
    if batch and split is None:
        split = "test" if not examples.counts["train"] + examples.counts["eval"] else "train"
    return split, examples, through("statistics", cfg, runner)["statistics"]


def validate_check(spec: str, cfg: Config, invert: str = "false") -> dict[str, Any]:
    """Statistics and anomalies of a dataset (or one split of it) against its schema.

    Without a split suffix every split is checked and test is compared with train (skew).
    """
    runner = Runner(cfg.root)
    split, examples, stats = _ingest_and_describe(spec, cfg, runner, invert=invert)
    # The dataset's own curated schema (a root's earlier choice is a run's), and no accuracy to plan for.
    path = schema.curated_schema_path(cfg.schema_dir, examples.name, cfg.schema.schema_file)
    outputs = through("validate", cfg, runner, schema={"curated": path, "classes": examples.classes},
                      validate=validate.standalone_params(cfg))
    data_schema, result = outputs["schema"], outputs["validate"]
    anomalies = [a for a in result.anomalies if split is None or (a.split == split and a.type != "SKEW")]
    distances = list(result.distances) if split is None else []
    return {"dataset": spec, "schema": data_schema.source, "source": examples.source,
            "counts": {s: n for s, n in examples.counts.items() if split in (None, s)},
            "clean": not anomalies, "anomalies": [dataclasses.asdict(a) for a in anomalies],
            "distances": [dataclasses.asdict(d) for d in distances]}


MODEL_VIEW_IMAGES = 10_000  # images of each side the model looks at


def drift_check(baseline: str | None, current: str, cfg: Config, report: str | None = None,
                model: str | None = None, invert: str = "false") -> dict[str, Any]:
    """Tests `current` against `baseline` on the features with drift comparators in the current data's
    schema and, with `model` (a pushed version's directory), on what that model makes of both: its
    predicted classes, its confidence and its embeddings (`components.model_drift`). One check: the
    false-positive rate of `cfg.validate` is shared by all its tests.

    The current data's schema anomalies come along; with `report`, a self-contained HTML file too.

    Without `baseline`, the version's own (`components.drift_baseline`, its run's data at push) is it.

    Datasets are ingested and their statistics computed under `cfg.root`, cached like a run's.
    """
    if baseline is None and not model:
        raise ConfigError("drift: --baseline SPEC is needed, unless --model or --serving-dir names a pushed "
                          "version, whose own baseline it then is")
    models = model_drift.load_model(model) if model else None  # a wrong directory fails before any work
    if baseline is None and invert != "false":  # its histograms are of images as delivered, never turned
        raise ConfigError(f"--invert {invert}: a version's own drift baseline is of images as delivered; compare "
                          "today's as delivered too (leave --invert out) or pass --baseline SPEC")
    stored = drift_baseline.load(model) if baseline is None else None
    info = model_info(Path(model)) if model else {}
    if stored is not None:
        baseline = f"{model} (its run's data at push)"
        before, before_name, base_pattern, base_flipped = stored.statistics(), "", None, False
        before_classes = tuple(info.get("classes", ()))
        before_classes = before_classes if before_classes != schema.numbered(len(before_classes)) else ()
    else:
        before, before_name, base_pattern, before_classes, base_flipped = statistics_for(baseline, cfg, invert)
    after, after_name, pattern, after_classes, flipped = statistics_for(current, cfg, invert)
    for side, stats in ((baseline, before), (current, after)):
        if not stats.num_examples:  # else every test is skipped and the schema takes the blame
            raise DataError(f"{side}: no images to compare (0 examples)")
    other_classes = same_classes((baseline, before_classes), (current, after_classes))
    # The version's own baseline brings its dataset's schema: the minimums its data was validated with.
    named = (stored.dataset if stored is not None else "") or after_name or before_name
    path = schema.curated_schema_path(cfg.schema_dir, named, cfg.schema.schema_file)
    if path is None:
        raise DataError(f"{cfg.schema_dir}: no schema with drift thresholds; pass --schema FILE")
    proto = schema.load_schema(path)
    distances = compare(before, after, proto, f"drift: {baseline} vs {current}")
    if other_classes:  # the pixels still compare; the labels do not
        distances = [d for d in distances if d.feature != schema.LABEL]
    if not distances:
        raise DataError(f"{path}: no feature of the schema has a drift comparator that both datasets have")
    if models is not None:
        distances += _model_view(models, model, (baseline, base_pattern, base_flipped), (current, pattern, flipped),
                                 proto, cfg.seed, bool(info.get("inverted", False)), stored)
    distances = decide(distances, validate.alarm_rate(cfg))
    from tensorflow_metadata.proto.v0 import statistics_pb2

    # Images without labels (serving traffic) are checked as the schema's SERVING environment: no label.
    labelled = {name: bool((counts := fixed_histogram(stats, schema.LABEL)) is not None and counts.sum())
                for name, stats in (("baseline", before), ("current", after))}
    # Against a version trained on inverted data, today's images are checked as its model takes them, as the
    # version's run checked its own: a dark-on-light source is its normal, not an anomaly.
    checked = statistics_for(current, cfg, "true")[0] if stored is not None and info.get("inverted") else after
    anomalies, _ = validate.anomalies_of(statistics_pb2.DatasetFeatureStatisticsList(datasets=[checked]), proto,
                                         "current", "TRAINING" if labelled["current"] else "SERVING")
    if other_classes:
        anomalies = [other_classes, *anomalies]
    result = {"baseline": baseline, "current": current, "schema": str(path),
              **({"label": "not compared: the " + " and the ".join(n for n, has in labelled.items() if not has)
                           + " data have no labels"} if not all(labelled.values()) else {}),
              **({"label": "not compared: the labels stand for other classes (CLASS_NAMES)"} if other_classes else {}),
              "counts": {"baseline": before.num_examples, "current": after.num_examples},
              "drifted": bool(other_classes) or any(d.drifted for d in distances),
              **check_verdict(distances, bool(other_classes)),
              "distances": [dataclasses.asdict(d) for d in distances],
              # Where each drifted feature's mass went: the bucket that gained most.
              "moved": [moved_bucket(d.feature, fixed_histogram(before, d.feature), fixed_histogram(after, d.feature))
                        for d in distances if d.drifted and d.comparison.startswith("drift")],
              "anomalies": [dataclasses.asdict(a) for a in anomalies]}
    if report:
        drift_html(result, before, after, report, _moved_images(result["moved"], pattern))
    return result


def model_view_images(images: np.ndarray, inverted: bool) -> np.ndarray:
    """Images as delivered, [N, 784] or [N, 28, 28], as the Keras model of a version takes them: [N, 28, 28],
    inverted (255 - x) when its training data was (`model_info.json` `inverted`), as its signatures do."""
    images = images.reshape(-1, 28, 28)
    return image_features.as_delivered(images, inverted)


def _model_view(models, model: str, baseline: tuple[str, str | None, bool], current: tuple[str, str | None, bool],
                proto, seed: int, inverted: bool, stored: drift_baseline.Stored | None = None) -> list:
    """The model's tests on up to `MODEL_VIEW_IMAGES` images of each side (both must be datasets, or the
    baseline the version `stored`); a side whose examples were inverted (`--invert`) is turned back to its
    images as delivered first, then as the version's model takes them (`inverted`, its `model_info.json`)."""
    from components.inputs import split_arrays

    read = []
    for spec, pattern, flipped in (baseline, current)[1 if stored is not None else 0:]:
        if pattern is None:
            raise DataError(f"{spec}: --model compares images, not statistics; pass a dataset SPEC")
        images, labels = split_arrays(pattern, MODEL_VIEW_IMAGES)
        read.append((model_view_images(image_features.as_delivered(images, flipped), inverted), labels))
    classes = int(models[0].output_shape[-1])
    if stored is None:  # the baseline's labels give the model's confusion, through which the current mix is estimated
        base, labels = model_drift.outputs(models, read[0][0]), read[0][1]
    elif stored.probabilities.shape[1] != classes:
        raise DataError(f"{Path(model) / drift_baseline.BASELINE}: not a drift baseline of this model "
                        f"({stored.probabilities.shape[1]} classes, the model has {classes}); pass --baseline SPEC")
    else:
        base, labels = (stored.probabilities, stored.embeddings), stored.labels
    class_effect = comparators(proto).get(schema.LABEL, ("l_infinity", 0.3 / classes))[1]
    found = model_drift.compare_outputs(base, model_drift.outputs(models, read[-1][0]), class_effect,
                                        f"model {model}: {baseline[0]} vs {current[0]}", seed, labels)
    # The model's view takes MODEL_VIEW_IMAGES of each side: a larger batch would not decide it.
    return [dataclasses.replace(d, needed=None) if d.needed and d.needed > MODEL_VIEW_IMAGES else d for d in found]


def _moved_images(moved: list[dict], pattern: str | None, per_bucket: int = 8,
                  limit: int = 20_000) -> dict[str, np.ndarray]:
    """feature: up to `per_bucket` current images in the bucket that gained most (summary features only;
    the label's bucket is a class, shown by the tests' table). Empty for a saved statistics file."""
    wanted = [m for m in moved if m["feature"] in image_features.NAMES]
    if pattern is None or not wanted:
        return {}
    from components.inputs import split_arrays

    images = split_arrays(pattern, limit)[0].reshape(-1, 28, 28)
    features, found = image_features.summarize(images), {}
    for m in wanted:
        low, high = image_features.RANGES[m["feature"]]
        values = np.clip(features[m["feature"]], low, high)
        inside = (values >= m["low"]) & ((values < m["high"]) | (m["high"] >= high))  # the last bucket is closed
        found[m["feature"]] = images[inside][:per_bucket]
    return found


def infer_schema_text(spec: str, cfg: Config) -> str:
    """A draft schema inferred from a dataset's train statistics, for review before curating it.

    It carries the MNIST-family contract, each summary feature's observed range widened by 10% (at least
    2% of its possible range), the default drift and skew thresholds (see
    `components.schema.apply_contract`), and the data's classes: their names, or for numbered labels as
    many as the train split holds.
    """
    runner = Runner(cfg.root)
    _, examples, stats = _ingest_and_describe(spec, cfg, runner)
    if not examples.counts["train"]:
        raise DataError(f"{spec}: no training examples to draft a schema from (a directory of test files only "
                        "is a test split)")
    classes = examples.classes
    counts = fixed_histogram(load_tfdv().load_stats_binary(stats.path("train")).datasets[0], schema.LABEL)
    if not classes and counts is not None and counts.any():  # numbered labels: as many classes as observed
        classes = schema.numbered(int(np.flatnonzero(counts)[-1]) + 1)
    inferred = runner(schema.COMPONENT, stats, curated=None, classes=classes)
    split = {name: load_tfdv().load_stats_binary(stats.path(name)).datasets[0] if examples.counts.get(name) else None
             for name in ("train", "test")}
    return minimums.drafted(Path(inferred.path).read_text(), split["train"], split["test"], spec)
