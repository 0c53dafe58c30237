"""The production pipeline, declared once as data: ingest → statistics → schema → validate → tune → train →
evaluate → push. Order, `--from`/`--to`, the config tree, flags, the run summary, the report and the lineage keys
follow from it and from the components' declarations."""
from __future__ import annotations

from components import budget, evaluate, ingest, push, schema, statistics, train, tune, validate, versions
from engine.dag import Node, Pipeline, Resolver

# The newest earlier span on this pipeline that passed validation (other data): drift is measured against it.
PREVIOUS_SPAN = Resolver("previous_span", after=("ingest",), resolve=lambda cfg, out, metadata: validate.previous_span_statistics(
    metadata, cfg.root, out["ingest"].fingerprint) if cfg.validate.drift else None)
# The model serving now, read from the serving directory (not a copy of the model being evaluated).
BASELINE = Resolver("baseline", after=("train",), resolve=lambda cfg, out, metadata: versions.serving_baseline(
    push.serving_dir(cfg), out["train"].fingerprint))

PRODUCTION = Pipeline("production", final_status="pushed", summary=budget.summarize, nodes=(
    Node(ingest.COMPONENT),
    Node(statistics.COMPONENT, inputs=("ingest",)),
    Node(schema.COMPONENT, inputs=("statistics",)),
    Node(validate.COMPONENT, inputs=("statistics", "schema", PREVIOUS_SPAN)),
    Node(tune.COMPONENT, inputs=("ingest", "schema")),
    Node(train.COMPONENT, inputs=("ingest", "schema", "tune")),
    Node(evaluate.COMPONENT, inputs=("train", "ingest", BASELINE)),
    Node(push.COMPONENT, inputs=("train", "evaluate", "ingest")),
))
