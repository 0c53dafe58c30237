"""The run's HTML report: each node's own section (declared with the node), then the components and the
lineage of the pushed model. Self-contained: inline CSS, SVG and PNG (`engine.html`), no scripts, no network."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from engine.files import write_text
from engine.html import CSS, rows, table


def run_html(pipeline, summary: dict[str, Any], outputs: dict[str, Any], lineage: dict[str, Any] | None,
             path: str | Path) -> None:
    """Writes a run's report: each node's section of `pipeline` in order (dataset with sample images per
    class, validation and drift, tuning trials, training curves, evaluation with the confusion matrix,
    the blessing decision), then the components and the lineage of the pushed model.

    Sections the run did not reach say so. Self-contained: inline CSS, SVG and PNG, no scripts.
    """
    sections = [node.report(summary, outputs) for node in pipeline.nodes if node.report]
    component_rows = [[html.escape(name), c["state"] + (" (reused)" if c.get("reused") else ""),
                       f"{c['seconds']:.1f}s", html.escape(c["uri"])] for name, c in summary["components"].items()]
    sections.append(("components", "Components", table(["component", "state", "time", "output"], component_rows, "")))
    if lineage:
        facts = {"version": lineage["version"], "run": lineage["run_id"]}
        for key in (kind.lower() for kind in pipeline.output_kinds()):
            if key in lineage and key != "pushedmodel":
                props = lineage[key]["properties"]
                facts[key] = f"{lineage[key]['uri']} (fingerprint {str(props.get('fingerprint', ''))[:16]})"
        if "hyperparameters" in lineage:
            facts["hyperparameter values"] = json.dumps(lineage["hyperparameters"]["properties"].get("values"))
        lineage_html = f"<table>{rows(facts)}</table>"
    else:
        lineage_html = "<p>No model was pushed by this run.</p>"
    sections.append(("lineage", "Lineage", lineage_html))
    body = "\n".join(f'<section id="{sid}"><h2>{title}</h2>{content}</section>' for sid, title, content in sections)
    error = f"<p class='bad'>{html.escape(summary['error'])}</p>" if summary.get("error") else ""
    page = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Run {summary['run_id']}</title>
<style>{CSS}
td.samples img{{image-rendering:pixelated;margin:1px}}table.confusion td{{min-width:34px}}</style></head><body>
<h1>Run {html.escape(summary['run_id'])}: {html.escape(summary['status'])}</h1>{error}
{body}
</body></html>
"""
    write_text(Path(path), page)
