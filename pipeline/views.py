"""What the commands print: one line per result, or a table, from the objects `--json` prints whole."""
from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from components.drift import undecided_text, verdict_text
from engine.artifacts import ARTIFACT_TYPES


def count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def validation(report: dict[str, Any], out: TextIO) -> None:
    """`validate`: the dataset, its counts and schema, then one line per anomaly."""
    counts = ", ".join(f"{s} {n}" for s, n in report["counts"].items())
    out.write(f"{report['dataset']} ({counts}) against {report['schema']}: "
              f"{'clean' if report['clean'] else count(len(report['anomalies']), 'anomaly', 'anomalies')}\n")
    for a in report["anomalies"]:
        out.write(f"  {a['split']:<6} {a['feature']:<16} {a['type']}: {a['description']}\n")


def drift(report: dict[str, Any], out: TextIO) -> None:
    """`drift`: the label's verdict, one line per test, then the current data's anomalies."""
    if "label" in report:
        out.write(f"label: {report['label']}\n")
    out.write(f"{'feature':<18} {'test':<11} {'p-value':>8} {'alpha':>8} {'effect size':<26} {'effect':>7} "
              f"{'minimum':>7}  result\n")
    for d in report["distances"]:
        out.write(f"{d['feature']:<18} {d['test']:<11} {d['p_value']:>8.1e} {d['alpha']:>8.1e} {d['measure']:<26} "
                  f"{d['distance']:>7.4f} {d['threshold']:>7.4f}  {verdict_text(d)}\n")
    if report.get("verdict") == "insufficient data":
        out.write(f"insufficient data: {undecided_text(report)}\n")
    for a in report["anomalies"]:
        out.write(f"{a['split']:<7} {a['feature']:<16} {a['type']}: {a['description']}\n")


def predictions(result: dict[str, Any], out: TextIO) -> None:
    """`predict`: one line per input, and the accuracy when the data has labels."""
    for row in result["predictions"]:
        label = f"  label {row['label']}" if "label" in row else ""
        name = f" {row['class']}" if "class" in row and row["class"] != str(row["class_id"]) else ""
        out.write(f"{row['input']}: class {row['class_id']}{name} ({row['probability']:.4f}){label}\n")
    if "accuracy" in result:
        out.write(f"accuracy {result['accuracy']:.4f} on {result['count']} examples of {result['dataset']} "
                  f"({result['split'] or 'all'}), model {result['model']}\n")


def runs(result: list[dict[str, Any]]) -> list[str]:
    """`runs list`: a row per run, ending with its error when it has one."""
    rows = [f"{'run':<21} {'status':<11} {'started':<25} {'accuracy':>8} {'pushed':>6}  dataset"]
    return rows + [f"{r['run_id']:<21} {r['status'] or '':<11} {r['started'] or '':<25} "
                   f"{'' if r['accuracy'] is None else format(r['accuracy'], '.4f'):>8} "
                   f"{'' if r['pushed_version'] is None else r['pushed_version']:>6}  {r['dataset'] or ''}"
                   + (f"  error: {r['error']}" if r["error"] else "") for r in result]


def run(result: dict[str, Any]) -> list[str]:
    """`runs show`: the run, its components and its config."""
    rows = [f"run {result['run_id']}: {result['status']}" + (f" ({result['error']})" if result["error"] else ""),
            f"started {result['started']}, finished {result['finished']}, report {result['report']}"]
    if result.get("accuracy") is not None:
        rows.append(f"test accuracy {result['accuracy']:.4f}" + (
            f", pushed version {result['pushed_version']}" if result.get("pushed_version") is not None else ""))
    for e in result["executions"]:
        output = e["output"]
        rows.append(f"  {e['component']:<10} {e['state']:<8} {e['seconds'] or 0:7.1f}s  "
                    + (f"{output['type']} {output['uri']}" if output else e["error"] or ""))
    return rows + ["config:", *("  " + line for line in (result["config"] or "").splitlines())]


def lineage(result: dict[str, Any], kinds: tuple[str, ...]) -> list[str]:
    """`runs lineage`: what produced a pushed version, artifact by artifact in the pipeline's order, each
    described as its kind describes itself (`Artifact.described`)."""
    rows = [f"version {result['version']} ({result['uri']}) pushed by run {result['run_id']}"]
    if "baseline" in result:  # the version serving when it was evaluated, compared with
        baseline = result["baseline"]
        rows.append(f"  {'baseline':<16} version {baseline['properties'].get('version')} ({baseline['uri']}), "
                    "the model serving when it was evaluated")
    for kind in kinds:
        key = kind.lower()
        if key in result:
            detail = ARTIFACT_TYPES[kind].described(result[key]["properties"])
            rows.append(f"  {key:<16} {result[key]['uri']}\n  {'':<16} {detail}")
    return rows


def summary(result: dict[str, Any], as_json: bool, out: TextIO, pipeline) -> None:
    """A run's summary (one line, with what each node's `headline` says of it; or JSON), and its error on
    stderr."""
    if as_json:
        out.write(json.dumps(result, indent=2, default=str) + "\n")
    else:
        said = "".join(n.component.headline(result) for n in pipeline.nodes if n.component.headline)
        out.write(f"run {result['run_id']}: {result['status']}{said}\n")
    if result["error"]:
        print(f"error: {result['error']}", file=sys.stderr)


def step(result: dict[str, Any], out: TextIO) -> None:
    """`step`: the step's state, its output and the run's status."""
    output = result["output"]
    out.write(f"step {result['step']} of run {result['run_id']}: {result['state']}"
              + (f", {output['type']} {output['uri']}" if output else "") + f"; run {result['status']}\n")
