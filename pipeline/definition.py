"""The production pipeline, declared once as data: ingest → statistics → schema → validate → tune → train →
evaluate → push. Order, `--from`/`--to`, the run summary, the report and the lineage keys follow from it."""
from __future__ import annotations

import dataclasses

from components import evaluate, ingest, push, schema, statistics, train, tune, validate, versions
from pipeline import report
from pipeline.config import DEFAULT_MIN_ACCURACY, FALLBACK_MIN_ACCURACY, Config, TrainConfig
from components.ingest import Examples
from engine.dag import Node, Pipeline, Resolver, Stop
from engine.errors import ValidationFailed


def min_accuracy(cfg: Config, examples: Examples) -> float:
    """The blessing threshold: the config's, else the dataset's known default."""
    if cfg.evaluate.min_accuracy is not None:
        return cfg.evaluate.min_accuracy
    return DEFAULT_MIN_ACCURACY.get(examples.name, FALLBACK_MIN_ACCURACY)


def _search(cfg: Config, out) -> str:
    return tune.search_key(out["schema"], cfg.tune, cfg.train.batch_size, cfg.seed)


def _reusable_search(cfg: Config, out, store):
    """A search result for the same schema, space and settings, on any data (a distributed search always
    searches: its workers wait for a chief serving trials)."""
    if not cfg.tune.enabled or tune.distributed_role() is not None:
        return None
    return tune.reusable_hyperparameters(store, _search(cfg, out))


def _tune_params(cfg: Config, out, store) -> dict:
    # Only the device settings of train reach tune, so other training flags don't invalidate a search.
    devices = TrainConfig(distribute=cfg.train.distribute, mixed_precision=cfg.train.mixed_precision,
                          tensorboard=cfg.train.tensorboard, deterministic=cfg.train.deterministic)
    return {"tune": cfg.tune, "batch_size": cfg.train.batch_size, "seed": cfg.seed, "devices": devices,
            "budget": cfg.budget_seconds}


# The newest earlier span on this pipeline that passed validation (other data): drift is measured against it.
PREVIOUS_SPAN = Resolver("previous_span", after=("ingest",), resolve=lambda cfg, out, store: validate.previous_span_statistics(
    store, cfg.root, out["ingest"].fingerprint) if cfg.validate.drift else None)
# The model serving now, read from the serving directory (not a copy of the model being evaluated).
BASELINE = Resolver("baseline", after=("train",), resolve=lambda cfg, out, store: versions.serving_baseline(
    cfg.serving_dir, out["train"].fingerprint))

PRODUCTION = Pipeline("production", final_status="pushed", nodes=(
    Node(ingest.COMPONENT, params=lambda cfg, out, store: {"data": cfg.data}, summary=ingest.summarize,
         report=report.dataset_section),
    Node(statistics.COMPONENT, inputs=("ingest",), params=lambda cfg, out, store: {"beam_args": cfg.statistics.beam_args}),
    Node(schema.COMPONENT, inputs=("statistics",), summary=schema.summarize, params=lambda cfg, out, store: {
         **schema.choose(cfg.schema_dir, out["ingest"].name, cfg.schema.schema_file, schema.root_schema(store, cfg.root)),
         "classes": out["ingest"].classes}),
    Node(validate.COMPONENT, inputs=("statistics", "schema", PREVIOUS_SPAN), summary=validate.summarize,
         params=lambda cfg, out, store: {"false_positive_rate": cfg.validate.false_positive_rate,
                                         "min_accuracy": min_accuracy(cfg, out["ingest"])},
         report=report.validation_section,
         gate=lambda a, cfg: Stop("blocked", str(ValidationFailed(a.anomalies))) if a.anomalies else None),
    Node(tune.COMPONENT, inputs=("ingest", "schema"), params=_tune_params, reuse=_reusable_search,
         summary=tune.summarize, report=report.tuning_section,
         # A distributed-tuning worker stops once it ran its share of the chief's trials.
         gate=lambda hp, cfg: Stop("tuned") if tune.distributed_role() == "worker" else None),
    Node(train.COMPONENT, inputs=("ingest", "schema", "tune"), summary=train.summarize, report=report.training_section,
         params=lambda cfg, out, store: {"seed": cfg.seed, "budget": cfg.budget_seconds, "train": dataclasses.replace(
             cfg.train, epochs=cfg.train_epochs, schedule=cfg.schedule)}),
    Node(evaluate.COMPONENT, inputs=("train", "ingest", BASELINE), summary=evaluate.summarize,
         report=report.evaluation_section,
         params=lambda cfg, out, store: {"min_accuracy": min_accuracy(cfg, out["ingest"]),
                                  "max_regression": cfg.evaluate.max_regression,
                                  "min_class_recall": cfg.evaluate.min_class_recall,
                                  "baseline_broken": cfg.evaluate.baseline_broken},
         gate=lambda ev, cfg: None if ev.blessed else Stop("not_blessed", "model not blessed: " + "; ".join(ev.failed))),
    Node(push.COMPONENT, inputs=("train", "evaluate", "ingest"), params=lambda cfg, out, store: {"serving_dir": cfg.serving_dir},
         summary=push.summarize, report=report.blessing_section),
))
