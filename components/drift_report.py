"""Drift in HTML: the shared-bucket histograms, the table of tests (the validation section shows them too) and
the page of the `drift` command."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from components.drift import LABEL, boundaries, fixed_histogram, undecided_text, verdict_text
from engine.files import write_text
from engine.html import CSS, key, png_data_uri, svg_histogram, table

TESTS_EXPLAINED = ("Each feature's test has the interval null \"the effect is at most the schema's minimum effect "
                   "size\", not \"the two are equal\": a feature drifted when its p-value is at most its level alpha "
                   "(the check's false-positive rate, shared by its tests with Holm's method), so its effect is shown "
                   "above the minimum. It is ok when the mirrored test shows the effect within the minimum (at 95% "
                   "confidence), and too few images when the batch shows neither: the size given is the batch that "
                   "would decide. Histograms share fixed buckets.")


def _svg_histogram(feature: str, base: np.ndarray, current: np.ndarray) -> str:
    """Baseline and current shares per shared bucket, drawn as overlaid bars over the bucket range."""
    edges = boundaries()[feature]
    low, high = f"{edges[0]:g}", f"{edges[-1]:g}"
    if feature == LABEL:  # its buckets hold up to 64 classes: draw those up to the last class present
        used = np.flatnonzero(base + current)
        classes = int(used[-1]) + 1 if used.size else 1
        base, current, low, high = base[:classes], current[:classes], "class 0", f"class {classes - 1}"
    return svg_histogram(feature, base, current, low, high)


def histograms(distances: list[dict[str, Any]], baseline, current) -> str:
    """A histogram on the shared buckets for each compared feature, baseline against current."""
    figures = []
    for d in distances:
        p, q = fixed_histogram(baseline, d["feature"]), fixed_histogram(current, d["feature"])
        if p is not None and q is not None:
            figures.append(_svg_histogram(d["feature"], p, q))
    return "".join(figures)


def _result(d: dict) -> str:
    text = verdict_text(d)
    return f"<span class='{'bad' if d['drifted'] else 'ok' if text == 'ok' else 'warn'}'>{html.escape(text)}</span>"


def tests_table(distances: list[dict], with_comparison: bool) -> str:
    """One row per test: what it compared, the statistic, p-value and level, the effect and its minimum."""
    rows = [[*([html.escape(d["comparison"])] if with_comparison else []), html.escape(d["feature"]), d["test"],
             f"{d['statistic']:.1f}" + (f" ({d['dof']} dof)" if d["dof"] else ""), f"{d['p_value']:.1e}",
             f"{d['alpha']:.1e}", d["measure"], f"{d['distance']:.4f}", f"{d['threshold']:.4f}",
             _result(d)] for d in distances]
    return table([*(["comparison"] if with_comparison else []), "feature", "test", "statistic", "p-value", "alpha",
                  "effect size", "effect", "minimum", "result"], rows, "No comparisons.")


def anomalies_table(anomalies: list[dict]) -> str:
    """One row per anomaly: the split, the feature, its type and description."""
    rows = [[html.escape(a["split"]), html.escape(a["feature"]), html.escape(a["type"]),
             html.escape(a["description"])] for a in anomalies]
    return table(["split", "feature", "type", "description"], rows, "No anomalies.")


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


def _moved(moved: list[dict], images: dict[str, np.ndarray]) -> str:
    """Per drifted feature, the bucket that gained most and a few current images from it."""
    rows = []
    for m in moved:
        cells = "".join(f"<img src='{png_data_uri(img)}' width='56' height='56' alt='{html.escape(m['feature'])}'>"
                        for img in images.get(m["feature"], []))
        rows.append(f"<tr><th>{html.escape(m['feature'])}</th><td>[{m['low']:g}, {m['high']:g})</td>"
                    f"<td>{m['baseline_share']:.2%} → {m['current_share']:.2%}</td>"
                    f"<td class='samples'>{cells}</td></tr>")
    head = "<tr><th>feature</th><th>bucket</th><th>share: baseline → current</th><th>current images in it</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>" if rows else "<p>Nothing drifted.</p>"


def drift_html(report: dict[str, Any], baseline, current, path: str | Path,
               moved_images: dict[str, np.ndarray] | None = None) -> None:
    """Writes the drift report of the `drift` command (`report` is its result): summary, drift table, where the
    drifted features moved (with current images from there), anomalies, per-feature statistics, histograms."""
    drifted = [d for d in report["distances"] if d["drifted"]]
    verdict = (f"<p class='bad'>Drift in {len(drifted)} feature(s): "
               f"{html.escape(', '.join(d['feature'] for d in drifted))}</p>" if drifted
               else f"<p class='warn'>Insufficient data: {html.escape(undecided_text(report))}.</p>"
               if report.get("verdict") == "insufficient data" else "<p class='ok'>No drift.</p>")
    base_rows, current_rows = _feature_rows(baseline), _feature_rows(current)
    stat_rows = [[html.escape(name), *base_rows.get(name, [""] * 5), *current_rows.get(name, [""] * 5)]
                 for name in sorted(set(base_rows) | set(current_rows))]
    figures = histograms(report["distances"], baseline, current)
    page = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Drift report</title>
<style>{CSS}</style></head><body>
<h1>Drift report</h1>
<section id="summary"><h2>Summary</h2>
<table><tr><th>baseline</th><td>{html.escape(report['baseline'])}</td><td>{report['counts']['baseline']:,} examples</td></tr>
<tr><th>current</th><td>{html.escape(report['current'])}</td><td>{report['counts']['current']:,} examples</td></tr>
<tr><th>schema</th><td colspan="2">{html.escape(report['schema'])}</td></tr></table>{verdict}</section>
<section id="drift"><h2>Drift</h2>
<p>{TESTS_EXPLAINED}</p>
{tests_table(report["distances"], with_comparison=False)}
</section>
<section id="moved"><h2>Where the drifted features moved</h2>
{_moved(report.get("moved", []), moved_images or {})}</section>
<section id="anomalies"><h2>Anomalies of the current data against the schema</h2>
{anomalies_table(report.get("anomalies", []))}</section>
<section id="statistics"><h2>Feature statistics</h2>
{table(["feature", "baseline count", "mean", "std", "min", "max", "current count", "mean", "std", "min", "max"],
       stat_rows, "No statistics.")}</section>
<section id="histograms"><h2>Histograms</h2>
{key("baseline", "current")} (share of examples per bucket)<div class="grid">{figures}</div></section>
</body></html>
"""
    write_text(Path(path), page)
