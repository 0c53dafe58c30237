"""The production pipeline as a DAG of components, read top to bottom."""
from __future__ import annotations

import dataclasses

from components import evaluate, ingest, push, schema, statistics, train, tune, validate
from pipeline import records
from pipeline.artifacts import Examples
from pipeline.config import DEFAULT_MIN_ACCURACY, FALLBACK_MIN_ACCURACY, Config, TrainConfig
from pipeline.errors import ValidationFailed
from pipeline.runner import Runner

ORDER = ("ingest", "statistics", "schema", "validate", "tune", "train", "evaluate", "push")


def min_accuracy(cfg: Config, examples: Examples) -> float:
    """The blessing threshold: the config's, else the dataset's known default."""
    if cfg.evaluate.min_accuracy is not None:
        return cfg.evaluate.min_accuracy
    return DEFAULT_MIN_ACCURACY.get(examples.name, FALLBACK_MIN_ACCURACY)


def production(cfg: Config, run: Runner) -> str:
    """ingest → statistics → schema → validate → tune → train → evaluate → push (only when blessed).

    Returns the run's status: `pushed`, `not_blessed`, or `tuned` for a distributed-tuning worker,
    which stops after running its share of the chief's trials. A search result for the same schema,
    search space and settings is reused, on any data, unless `tune.retune`. Validation compares test
    with train (skew) and, with `validate.drift`, this span's train split with the previous span's:
    the newest earlier run on this root over other data.

    Raises:
        ValidationFailed: the data has anomalies; nothing after validate runs.
    """
    examples = run(ingest.COMPONENT, data=cfg.data)
    stats = run(statistics.COMPONENT, examples, beam_args=cfg.statistics.beam_args)
    curated = schema.curated_schema_path(cfg.schema_dir, examples.name, cfg.schema.schema_file)
    data_schema = run(schema.COMPONENT, stats, curated=curated)
    previous = records.previous_span_statistics(cfg.root, examples.fingerprint) if cfg.validate.drift else None
    anomalies = run(validate.COMPONENT, stats, data_schema, previous)
    if anomalies.anomalies:
        raise ValidationFailed(anomalies.anomalies)
    role = tune.distributed_role() if cfg.tune.enabled else None
    search = tune.search_key(data_schema, cfg.tune, cfg.train.batch_size, cfg.seed)
    # A distributed search always searches: its workers wait for a chief serving trials.
    reuse = cfg.tune.enabled and not run.forced("tune") and role is None
    earlier = records.reusable_hyperparameters(cfg.root, search) if reuse else None
    # Only the device settings of train reach tune, so other training flags don't invalidate a search.
    devices = TrainConfig(distribute=cfg.train.distribute, mixed_precision=cfg.train.mixed_precision,
                          tensorboard=cfg.train.tensorboard)
    hyperparameters = run.reuse(tune.COMPONENT, earlier) if earlier else run(
        tune.COMPONENT, examples, data_schema, tune=cfg.tune, batch_size=cfg.train.batch_size, seed=cfg.seed,
        devices=devices)
    if role == "worker":
        return "tuned"
    model = run(train.COMPONENT, examples, hyperparameters, seed=cfg.seed,
                train=dataclasses.replace(cfg.train, epochs=cfg.train_epochs))
    baseline = records.latest_blessed(cfg.root, cfg.serving_dir, model.fingerprint)
    evaluation = run(evaluate.COMPONENT, model, examples, baseline, min_accuracy=min_accuracy(cfg, examples),
                     max_regression=cfg.evaluate.max_regression, min_class_recall=cfg.evaluate.min_class_recall)
    if not evaluation.blessed:
        return "not_blessed"
    run(push.COMPONENT, model, evaluation, examples, serving_dir=cfg.serving_dir)
    return "pushed"
