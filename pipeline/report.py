"""Self-contained HTML reports (inline CSS and SVG, no scripts, no network) of drift and validation."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from components.drift import boundaries, fixed_histogram
from pipeline.records import write_text

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1d232a;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #d7dde3;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #d7dde3;padding:3px 8px;text-align:right}
th{background:#f1f4f7}td:first-child,th:first-child{text-align:left}
.bad{color:#b3261e;font-weight:600}.ok{color:#1b7a3a}.grid{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;border:1px solid #d7dde3;padding:8px}figcaption{font-weight:600;margin-bottom:4px}
.key span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
"""
BASE, CURRENT = "#3b6fb6", "#e8772e"


def _table(headers: list[str], rows: list[list[Any]], empty: str) -> str:
    if not rows:
        return f"<p class='ok'>{html.escape(empty)}</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _svg_histogram(feature: str, base: np.ndarray, current: np.ndarray) -> str:
    """Baseline and current shares per shared bucket, drawn as overlaid bars over the bucket range."""
    width, height, pad = 320, 140, 4
    edges = boundaries()[feature]
    p, q = base / max(base.sum(), 1), current / max(current.sum(), 1)
    top = max(p.max(), q.max(), 1e-9)
    step = (width - 2 * pad) / len(p)
    bars = []
    for i, (a, b) in enumerate(zip(p, q)):
        x = pad + i * step
        for share, colour, inset in ((a, BASE, 0.0), (b, CURRENT, step * 0.3)):
            h = (height - 2 * pad) * share / top
            bars.append(f"<rect x='{x + inset:.1f}' y='{height - pad - h:.1f}' width='{step * 0.7:.1f}' "
                        f"height='{h:.1f}' fill='{colour}' fill-opacity='0.75'/>")
    axis = (f"<text x='{pad}' y='{height + 12}' font-size='10'>{edges[0]:g}</text>"
            f"<text x='{width - pad}' y='{height + 12}' font-size='10' text-anchor='end'>{edges[-1]:g}</text>")
    return (f"<figure><figcaption>{html.escape(feature)}</figcaption><svg width='{width}' height='{height + 14}' "
            f"role='img' aria-label='{html.escape(feature)} histogram'>{''.join(bars)}{axis}</svg></figure>")


def _feature_rows(stats) -> dict[str, list[str]]:
    rows = {}
    for f in stats.features:
        name = f.path.step[0]
        if f.HasField("num_stats"):
            s = f.num_stats
            rows[name] = [f"{s.common_stats.num_non_missing:,}", f"{s.mean:.3f}", f"{s.std_dev:.3f}",
                          f"{s.min:.3f}", f"{s.max:.3f}"]
        elif f.HasField("string_stats"):
            s = f.string_stats
            rows[name] = [f"{s.common_stats.num_non_missing:,}", f"{s.unique} classes", "", "", ""]
    return rows


def drift_html(report: dict[str, Any], baseline, current, path: str | Path) -> None:
    """Writes the drift report: summary, drift table, anomalies, per-feature statistics, histograms.

    Example:
        >>> drift_html(drift_check(...), baseline_stats, current_stats, "drift.html")
    """
    drifted = [d for d in report["distances"] if d["drifted"]]
    verdict = (f"<p class='bad'>Drift in {len(drifted)} feature(s): "
               f"{html.escape(', '.join(d['feature'] for d in drifted))}</p>" if drifted
               else "<p class='ok'>No drift.</p>")
    drift_rows = [[html.escape(d["feature"]), d["measure"], f"{d['distance']:.4f}", f"{d['threshold']:.4f}",
                   f"{d['noise']:.4f}", "<span class='bad'>DRIFTED</span>" if d["drifted"] else "<span class='ok'>ok</span>"]
                  for d in report["distances"]]
    anomaly_rows = [[html.escape(a["split"]), html.escape(a["feature"]), html.escape(a["type"]),
                     html.escape(a["description"])] for a in report.get("anomalies", [])]
    base_rows, current_rows = _feature_rows(baseline), _feature_rows(current)
    stat_rows = [[html.escape(name), *base_rows.get(name, [""] * 5), *current_rows.get(name, [""] * 5)]
                 for name in sorted(set(base_rows) | set(current_rows))]
    figures = []
    for d in report["distances"]:
        p, q = fixed_histogram(baseline, d["feature"]), fixed_histogram(current, d["feature"])
        if p is not None and q is not None:
            figures.append(_svg_histogram(d["feature"], p, q))
    page = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Drift report</title>
<style>{CSS}</style></head><body>
<h1>Drift report</h1>
<section id="summary"><h2>Summary</h2>
<table><tr><th>baseline</th><td>{html.escape(report['baseline'])}</td><td>{report['counts']['baseline']:,} examples</td></tr>
<tr><th>current</th><td>{html.escape(report['current'])}</td><td>{report['counts']['current']:,} examples</td></tr>
<tr><th>schema</th><td colspan="2">{html.escape(report['schema'])}</td></tr></table>{verdict}</section>
<section id="drift"><h2>Drift</h2>
<p>A feature drifted when its distance exceeds the schema's threshold plus the sampling noise that samples
of these sizes reach by chance 999 times in 1000. Histograms share fixed buckets.</p>
{_table(["feature", "measure", "distance", "threshold", "noise", "result"], drift_rows, "No comparable features.")}
</section>
<section id="anomalies"><h2>Anomalies of the current data against the schema</h2>
{_table(["split", "feature", "type", "description"], anomaly_rows, "No anomalies.")}</section>
<section id="statistics"><h2>Feature statistics</h2>
{_table(["feature", "baseline count", "mean", "std", "min", "max", "current count", "mean", "std", "min", "max"],
        stat_rows, "No statistics.")}</section>
<section id="histograms"><h2>Histograms</h2>
<p class="key"><span style="background:{BASE}"></span>baseline<span style="background:{CURRENT}"></span>current
(share of examples per bucket)</p><div class="grid">{''.join(figures)}</div></section>
</body></html>
"""
    write_text(Path(path), page)
