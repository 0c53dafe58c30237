"""Self-contained HTML reports (inline CSS and SVG, no scripts, no network) of drift and validation."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from components.drift import LABEL, boundaries, fixed_histogram
from engine.errors import first_line
from engine.files import write_text

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
    low, high = f"{edges[0]:g}", f"{edges[-1]:g}"
    if feature == LABEL:  # its buckets hold up to 64 classes: draw those up to the last class present
        used = np.flatnonzero(base + current)
        classes = int(used[-1]) + 1 if used.size else 1
        base, current, low, high = base[:classes], current[:classes], "class 0", f"class {classes - 1}"
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
    axis = (f"<text x='{pad}' y='{height + 12}' font-size='10'>{low}</text>"
            f"<text x='{width - pad}' y='{height + 12}' font-size='10' text-anchor='end'>{high}</text>")
    return (f"<figure><figcaption>{html.escape(feature)}</figcaption><svg width='{width}' height='{height + 14}' "
            f"role='img' aria-label='{html.escape(feature)} histogram'>{''.join(bars)}{axis}</svg></figure>")


def _key(base: str, current: str) -> str:
    return (f"<p class='key'><span style='background:{BASE}'></span>{html.escape(base)}"
            f"<span style='background:{CURRENT}'></span>{html.escape(current)}</p>")


def _histograms(distances: list[dict[str, Any]], baseline, current) -> str:
    """A histogram on the shared buckets for each compared feature, baseline against current."""
    figures = []
    for d in distances:
        p, q = fixed_histogram(baseline, d["feature"]), fixed_histogram(current, d["feature"])
        if p is not None and q is not None:
            figures.append(_svg_histogram(d["feature"], p, q))
    return "".join(figures)


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


TESTS_EXPLAINED = ("A feature drifted when its test rejects \"both samples come from one distribution\" at its "
                   "level alpha (the check's false-positive rate, shared by its tests with Holm's method) and its "
                   "effect size reaches the schema's minimum. Histograms share fixed buckets.")


def _tests_table(distances: list[dict], with_comparison: bool) -> str:
    """One row per test: what it compared, the statistic, p-value and level, the effect and its minimum."""
    rows = [[*([html.escape(d["comparison"])] if with_comparison else []), html.escape(d["feature"]), d["test"],
             f"{d['statistic']:.1f}" + (f" ({d['dof']} dof)" if d["dof"] else ""), f"{d['p_value']:.1e}",
             f"{d['alpha']:.1e}", d["measure"], f"{d['distance']:.4f}", f"{d['threshold']:.4f}",
             "<span class='bad'>DRIFTED</span>" if d["drifted"] else "<span class='ok'>ok</span>"] for d in distances]
    return _table([*(["comparison"] if with_comparison else []), "feature", "test", "statistic", "p-value", "alpha",
                   "effect size", "effect", "minimum", "result"], rows, "No comparisons.")


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
    """Writes the drift report: summary, drift table, where the drifted features moved (with current images
    from there), anomalies, per-feature statistics, histograms.

    Example:
        >>> drift_html(drift_check(...), baseline_stats, current_stats, "drift.html")
    """
    drifted = [d for d in report["distances"] if d["drifted"]]
    verdict = (f"<p class='bad'>Drift in {len(drifted)} feature(s): "
               f"{html.escape(', '.join(d['feature'] for d in drifted))}</p>" if drifted
               else "<p class='ok'>No drift.</p>")
    anomaly_rows = [[html.escape(a["split"]), html.escape(a["feature"]), html.escape(a["type"]),
                     html.escape(a["description"])] for a in report.get("anomalies", [])]
    base_rows, current_rows = _feature_rows(baseline), _feature_rows(current)
    stat_rows = [[html.escape(name), *base_rows.get(name, [""] * 5), *current_rows.get(name, [""] * 5)]
                 for name in sorted(set(base_rows) | set(current_rows))]
    figures = _histograms(report["distances"], baseline, current)
    page = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Drift report</title>
<style>{CSS}</style></head><body>
<h1>Drift report</h1>
<section id="summary"><h2>Summary</h2>
<table><tr><th>baseline</th><td>{html.escape(report['baseline'])}</td><td>{report['counts']['baseline']:,} examples</td></tr>
<tr><th>current</th><td>{html.escape(report['current'])}</td><td>{report['counts']['current']:,} examples</td></tr>
<tr><th>schema</th><td colspan="2">{html.escape(report['schema'])}</td></tr></table>{verdict}</section>
<section id="drift"><h2>Drift</h2>
<p>{TESTS_EXPLAINED}</p>
{_tests_table(report["distances"], with_comparison=False)}
</section>
<section id="moved"><h2>Where the drifted features moved</h2>
{_moved(report.get("moved", []), moved_images or {})}</section>
<section id="anomalies"><h2>Anomalies of the current data against the schema</h2>
{_table(["split", "feature", "type", "description"], anomaly_rows, "No anomalies.")}</section>
<section id="statistics"><h2>Feature statistics</h2>
{_table(["feature", "baseline count", "mean", "std", "min", "max", "current count", "mean", "std", "min", "max"],
        stat_rows, "No statistics.")}</section>
<section id="histograms"><h2>Histograms</h2>
{_key("baseline", "current")} (share of examples per bucket)<div class="grid">{figures}</div></section>
</body></html>
"""
    write_text(Path(path), page)


def png_data_uri(image: np.ndarray, scale: int = 2) -> str:
    """A grayscale uint8 image as an inline `data:image/png;base64,...` URI (no imaging library needed)."""
    import base64
    import struct
    import zlib

    pixels = np.kron(np.asarray(image, dtype=np.uint8), np.ones((scale, scale), dtype=np.uint8))
    height, width = pixels.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)  # filter type 0 per scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _svg_curves(history: dict[str, list[float]], metric: str) -> str:
    """Training and validation curves of one metric over epochs, as an inline SVG line chart."""
    series = [(name, history[name], colour) for name, colour in ((metric, BASE), (f"val_{metric}", CURRENT))
              if history.get(name)]
    if not series:
        return ""
    width, height, pad = 340, 190, 40
    values = [v for _, s, _ in series for v in s]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    epochs = max(len(s) for _, s, _ in series)
    parts = []
    for name, points, colour in series:
        xy = [(pad + (width - 2 * pad) * (i / max(epochs - 1, 1)), height - pad - (height - 2 * pad) * (v - low) / span)
              for i, v in enumerate(points)]
        parts.append(f"<polyline fill='none' stroke='{colour}' stroke-width='2' "
                     f"points='{' '.join(f'{x:.1f},{y:.1f}' for x, y in xy)}'/>")
        parts += [f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3' fill='{colour}'/>" for x, y in xy]
    left, bottom = pad, height - pad
    axis = [f"<line x1='{left}' y1='{pad}' x2='{left}' y2='{bottom}' stroke='#888'/>",
            f"<line x1='{left}' y1='{bottom}' x2='{width - pad}' y2='{bottom}' stroke='#888'/>",
            f"<text x='{width / 2:.0f}' y='{height - 4}' font-size='10' text-anchor='middle'>epoch</text>",
            f"<text x='10' y='{height / 2:.0f}' font-size='10' text-anchor='middle' "
            f"transform='rotate(-90 10 {height / 2:.0f})'>{html.escape(metric)}</text>"]
    for value in (low, (low + high) / 2, high):  # three values on the y axis
        y = bottom - (height - 2 * pad) * (value - low) / span
        axis.append(f"<text class='tick' x='{left - 3}' y='{y + 3:.1f}' font-size='9' text-anchor='end'>{value:.3g}</text>")
    for i in range(epochs):  # every epoch on the x axis (at most ten labels)
        if epochs <= 10 or i % -(-epochs // 10) == 0 or i == epochs - 1:
            x = pad + (width - 2 * pad) * (i / max(epochs - 1, 1))
            axis.append(f"<text class='tick' x='{x:.1f}' y='{bottom + 12}' font-size='9' text-anchor='middle'>{i + 1}</text>")
    axis = "".join(axis)
    return (f"<figure><figcaption>{metric}</figcaption><svg width='{width}' height='{height}' role='img' "
            f"aria-label='{metric} curves'>{''.join(parts)}{axis}</svg></figure>")


def _confusion(matrix: list[list[int]], names: list[str]) -> str:
    if not matrix:
        return "<p>Not evaluated.</p>"
    top = max(max(row) for row in matrix) or 1
    names = [html.escape(n) for n in names]
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{n}</th>" for n in names) + "</tr>"
    rows = "".join(f"<tr><th>{names[k]}</th>" + "".join(
        f"<td style='background:rgba(59,111,182,{0.85 * n / top:.2f})'>{n}</td>" for n in row) + "</tr>"
        for k, row in enumerate(matrix))
    return f"<table class='confusion'>{head}{rows}</table>"


def _samples(examples, names: list[str], per_class: int = 6, limit: int = 2000) -> str:
    """Up to `per_class` test images of each class, inline, under the class's name."""
    from components.evaluate import test_arrays

    try:
        images, labels = test_arrays(examples, limit)
    except Exception as exc:  # a report never fails a run; it says what is missing instead
        return f"<p class='bad'>Sample images unavailable: {html.escape(first_line(exc))}</p>"
    rows = []
    for k in sorted(set(labels.tolist())):
        picks = images[labels == k][:per_class]
        name = html.escape(names[k] if k < len(names) else str(k))
        cells = "".join(f"<img src='{png_data_uri(img.reshape(28, 28))}' width='56' height='56' "
                        f"alt='{name} sample'>" for img in picks)
        rows.append(f"<tr><th>{k}: {name}</th><td class='samples'>{cells}</td></tr>")
    return f"<table>{''.join(rows)}</table>"


def _rows(mapping: dict[str, Any]) -> str:
    return "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in mapping.items())


def dataset_section(summary: dict[str, Any], outputs) -> tuple[str, str, str]:
    """The dataset: spec, source, fingerprint, counts, schema source and sample images per class."""
    dataset = summary.get("dataset")
    counts = ", ".join(f"{s} {n:,}" for s, n in dataset["counts"].items()) if dataset else "not ingested"
    names = (summary.get("schema") or {}).get("classes") or (dataset or {}).get("classes") or []
    samples = _samples(outputs["ingest"], names) if "ingest" in outputs else "<p>Not ingested.</p>"
    facts = {"spec": dataset["spec"] if dataset else "", "source": dataset["source"] if dataset else "",
             "fingerprint": dataset["fingerprint"] if dataset else "", "examples": counts,
             "schema": (summary.get("schema") or {}).get("source", ""), "classes": ", ".join(names),
             **({"preprocessing": dataset["preprocessing"]} if dataset and dataset.get("preprocessing") else {}),
             **({"polarity": "inverted (255 - x): the source had dark ink on a light background; the serving "
                             "signatures invert their inputs the same way"} if dataset and dataset.get("inverted")
                else {})}
    return "dataset", "Dataset", f"<table>{_rows(facts)}</table><h3>Samples per class (test split)</h3>{samples}"


def validation_section(summary: dict[str, Any], outputs) -> tuple[str, str, str]:
    """Anomalies per split and feature, and every drift and skew comparison."""
    anomaly_rows = [[html.escape(a["split"]), html.escape(a["feature"]), html.escape(a["type"]),
                     html.escape(a["description"])] for a in summary.get("anomalies", [])]
    anomalies = (_table(["split", "feature", "type", "description"], anomaly_rows, "No anomalies.")
                 if "validate" in summary["components"] else "<p>Not validated.</p>")
    drift = f"<p>{TESTS_EXPLAINED}</p>" + _tests_table(summary.get("drift", []), with_comparison=True)
    skew = [d for d in summary.get("drift", []) if d["comparison"].startswith("skew")]
    figures = ""
    if skew and "statistics" in outputs:
        try:
            from components.libs import load_tfdv

            tfdv, stats = load_tfdv(), outputs["statistics"]
            train, test = (tfdv.load_stats_binary(stats.path(s)).datasets[0] for s in ("train", "test"))
            figures = (f"<h3>Skew histograms</h3>{_key('train', 'test')}"
                       f"<div class='grid'>{_histograms(skew, train, test)}</div>")
        except Exception as exc:  # a report never fails a run; it says what is missing instead
            figures = f"<p class='bad'>Histograms unavailable: {html.escape(first_line(exc))}</p>"
    return "validation", "Validation", f"{anomalies}<h3>Drift and skew</h3>{drift}{figures}"


def tuning_section(summary: dict[str, Any], outputs) -> tuple[str, str, str]:
    """The tuner, whether the search was reused, the best values and the trials table."""
    tuning = summary.get("tuning")
    if not tuning:
        return "tuning", "Tuning", "<p>Not tuned.</p>"
    columns = [c for c in ("trial_id", "status", "score", "epochs", "seconds", "memory_mb", "peak_mb", "tuner")
               if any(c in t for t in tuning["trials"])]
    names = sorted({n for t in tuning["trials"] for n in t.get("hyperparameters", {})})
    rows = [[_figure(t.get(c)) for c in columns] + [_figure(t.get("hyperparameters", {}).get(n)) for n in names]
            for t in tuning["trials"]]
    best = ", ".join(f"{html.escape(k)} {_figure(v)}" for k, v in sorted(tuning["best_hyperparameters"].items()))
    allotted = tuning.get("allotted_seconds")
    given = ("" if allotted is None else "; no search: the budget left too little time for one" if allotted == 0
             else f"; given {allotted:.0f} s")
    head = (f"<p>{html.escape(tuning['tuner'])}{', reused from an earlier search' if tuning['reused'] else ''}"
            f"{given}; best: {best}</p>")
    return "tuning", "Tuning", head + _table(columns + names, rows, "No trials (the reference model).")


def _figure(value: Any) -> str:
    """A table cell: floats to four significant digits, nothing for a missing value."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def training_section(summary: dict[str, Any], outputs) -> tuple[str, str, str]:
    """Training and validation curves of accuracy and loss per epoch."""
    training = summary.get("training")
    if not training:
        return "training", "Training", "<p>Not trained.</p>"
    curves = "".join(_svg_curves(training["history"], m) for m in ("accuracy", "loss"))
    plan = training.get("plan") or {}
    said = (f"<p>{html.escape(plan['schedule'])} learning rate; {plan['epochs_run']} epochs of up to "
            f"{plan['epochs_most']}, ended by {ENDED.get(plan['ended'], html.escape(plan['ended']))}; the model "
            f"kept is epoch {plan['best_epoch']}'s.</p>" if plan else "")
    return "training", "Training", f"{said}{_key('train', 'validation')}<div class='grid'>{curves}</div>"


ENDED = {"epochs": "its epochs", "budget": "the budget (no epoch starts that cannot finish in it)",
         "early_stopping": "early stopping"}


def _not_evaluated(summary: dict[str, Any]) -> str:
    return f"<p>Not evaluated (run {html.escape(summary['status'])}).</p>"


def evaluation_section(summary: dict[str, Any], outputs) -> tuple[str, str, str]:
    """Test accuracy and loss, the confusion matrix and per-class precision, recall and F1."""
    ev = summary.get("evaluation")
    if not ev:
        return "evaluation", "Evaluation", _not_evaluated(summary)
    names = [r.get("name", str(r["class"])) for r in ev["per_class"]]  # runs before class names had none
    class_rows = [[str(r["class"]), html.escape(name), f"{r['precision']:.3f}", f"{r['recall']:.3f}",
                   f"{r['f1']:.3f}", str(r["support"])] for r, name in zip(ev["per_class"], names)]
    table = _table(["class", "name", "precision", "recall", "f1", "support"], class_rows, "")
    return "evaluation", "Evaluation", (f"<p>Test accuracy {ev['accuracy']:.4f}, loss {ev['loss']:.4f}.</p>"
                                        f"{_confusion(ev['confusion_matrix'], names)}{table}")


def blessing_section(summary: dict[str, Any], outputs) -> tuple[str, str, str]:
    """The blessing decision with each check, and the version pushed."""
    ev = summary.get("evaluation")
    if not ev:
        return "blessing", "Blessing", _not_evaluated(summary)
    verdict = ("<p class='ok'>Blessed.</p>" if ev["blessed"] else
               f"<p class='bad'>Not blessed: {html.escape('; '.join(ev['failed']))}</p>")
    if ev["blessed"] and summary["status"] == "not_blessed":  # refused at push, against a version pushed since
        verdict = f"<p class='bad'>Blessed by evaluation, refused at push: {html.escape(summary['error'] or '')}</p>"
    checks = "".join(f"<li>{html.escape(r)}</li>" for r in ev["reasons"])
    push = summary.get("push")
    pushed = (f"<p>Pushed version {push['version']} to {html.escape(push['uri'])} "
              f"({html.escape(push['infra_check'])}).</p>" if push else "")
    if push and push.get("recheck"):
        pushed += f"<p>At push: {html.escape(push['recheck'])}.</p>"
    return "blessing", "Blessing", f"{verdict}<ul>{checks}</ul>{pushed}"


def run_html(pipeline, summary: dict[str, Any], outputs: dict[str, Any], lineage: dict[str, Any] | None,
             path: str | Path) -> None:
    """Writes a run's report: each node's section of `pipeline` in order (dataset with sample images per
    class, validation and drift, tuning trials, training curves, evaluation with the confusion matrix,
    the blessing decision), then the components and the lineage of the pushed model.

    Sections the run did not reach say so. Self-contained: inline CSS, SVG and PNG, no scripts.

    Example:
        >>> run_html(PRODUCTION, summary, outputs, metadata.lineage(summary["push"]["uri"]), "runs/x/report.html")
    """
    sections = [node.report(summary, outputs) for node in pipeline.nodes if node.report]
    component_rows = [[html.escape(name), c["state"] + (" (reused)" if c.get("reused") else ""),
                       f"{c['seconds']:.1f}s", html.escape(c["uri"])] for name, c in summary["components"].items()]
    sections.append(("components", "Components", _table(["component", "state", "time", "output"], component_rows, "")))
    if lineage:
        facts = {"version": lineage["version"], "run": lineage["run_id"]}
        for key in (kind.lower() for kind in pipeline.output_kinds()):
            if key in lineage and key != "pushedmodel":
                props = lineage[key]["properties"]
                facts[key] = f"{lineage[key]['uri']} (fingerprint {str(props.get('fingerprint', ''))[:16]})"
        if "hyperparameters" in lineage:
            facts["hyperparameter values"] = json.dumps(lineage["hyperparameters"]["properties"].get("values"))
        lineage_html = f"<table>{_rows(facts)}</table>"
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
