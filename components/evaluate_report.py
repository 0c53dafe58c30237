"""Evaluate's section of the run report: metrics, the confusion matrix, the slice table with the worst slices'
misclassified images, and calibration (reliability diagram, confidence of right and wrong predictions)."""
from __future__ import annotations

import html

import numpy as np

from components.calibration import reliability_svg
from engine.html import key, png_data_uri, svg_histogram, table, unavailable

WORST = 3  # slices whose misclassified images the report shows


def not_evaluated(summary: dict) -> str:
    """What the evaluation's and the blessing's sections say when the run stopped before evaluating."""
    return f"<p>Not evaluated (run {html.escape(summary['status'])}).</p>"


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


def _interval(value: float, low: float | None, high: float | None, signed: bool = False) -> str:
    form = "{:+.4f}" if signed else "{:.4f}"
    shown = form.format(value)
    return shown if low is None else f"{shown} [{form.format(low)}, {form.format(high)}]"


def slice_table(ev: dict) -> str:
    """Every measured slice, worst accuracy first, with its 95% interval and, against the serving model, the
    paired change; a slice a failed reason names is marked; then the slices too small to measure."""
    measured = sorted((s for s in ev.get("slices", []) if not s.get("too_small")), key=lambda s: s["accuracy"])
    small = [f"{html.escape(s['name'])} ({s['n']})" for s in ev.get("slices", []) if s.get("too_small")]
    note = f"<p>Too few images to measure: {', '.join(small)}.</p>" if small else ""
    if not measured:
        return f"<p>No slice has enough test images to be measured.</p>{note}"
    failed = " ".join(r for r in ev.get("failed", []) if r.startswith("slice accuracy"))
    with_baseline = any("change" in s for s in measured)
    headers = ["slice", "images", "accuracy [95% interval]"] + (
        ["serving model", "change [95% interval]"] if with_baseline else [])
    rows = []
    for s in measured:
        name = html.escape(s["name"])
        name = f"<span class='bad'>{name}</span>" if f"{s['name']} (" in failed else name
        row = [name, f"{s['n']:,}", _interval(s["accuracy"], s["low"], s["high"])]
        if with_baseline:
            row += [f"{s['baseline_accuracy']:.4f}", _interval(s["change"], s["change_low"], s["change_high"], True)]
        rows.append(row)
    return table(headers, rows, "") + note


def worst_images(ev: dict, outputs) -> str:
    """Misclassified test images of the `WORST` slices with the lowest accuracy, inline."""
    measured = sorted((s for s in ev.get("slices", []) if s.get("wrong")), key=lambda s: s["accuracy"])[:WORST]
    if not measured or "ingest" not in outputs:
        return ""
    from components.evaluate import test_arrays  # reads the ingest's test split: imported when drawn

    try:
        images, _ = test_arrays(outputs["ingest"], max(i for s in measured for i in s["wrong"]) + 1)
    except Exception as exc:  # a report never fails a run; it says what is missing instead
        return unavailable("The worst slices' images", exc)
    lines = []
    for s in measured:
        cells = "".join(f"<img src='{png_data_uri(images[i].reshape(28, 28))}' width='56' height='56' "
                        f"alt='misclassified in {html.escape(s['name'])}'>" for i in s["wrong"] if i < len(images))
        lines.append(f"<tr><th>{html.escape(s['name'])} ({s['accuracy']:.3f})</th><td class='samples'>{cells}</td></tr>")
    return f"<h3>Misclassified images of the worst slices</h3><table>{''.join(lines)}</table>"


def calibration_figures(found: dict | None) -> str:
    """The expected calibration error, the reliability diagram and the confidence histograms."""
    if not found:
        return ""
    histogram = svg_histogram("top confidence, right and wrong predictions", np.array(found["right"], float),
                              np.array(found["wrong"], float), "0", "1")
    return (f"<h3>Calibration</h3><p>Expected calibration error {found['ece']:.4f} ({len(found['bins'])} equal "
            f"confidence bins).</p>{key('right', 'wrong')}<div class='grid'><figure><figcaption>reliability "
            f"diagram: accuracy per confidence bin</figcaption>{reliability_svg(found)}</figure>{histogram}</div>")


def report_section(summary: dict, outputs) -> tuple[str, str, str]:
    """The run report's section: test accuracy and loss, the confusion matrix, per-class precision and recall
    with their intervals, the slices and calibration."""
    ev = summary.get("evaluation")
    if not ev:
        return "evaluation", "Evaluation", not_evaluated(summary)
    names = [r.get("name", str(r["class"])) for r in ev["per_class"]]  # runs before class names had none
    class_rows = [[str(r["class"]), html.escape(name), _interval(r["precision"], r.get("precision_low"),
                                                                 r.get("precision_high")),
                   _interval(r["recall"], r.get("recall_low"), r.get("recall_high")), f"{r['f1']:.3f}",
                   str(r["support"])] for r, name in zip(ev["per_class"], names)]
    per_class = table(["class", "name", "precision [95%]", "recall [95%]", "f1", "support"], class_rows, "")
    return "evaluation", "Evaluation", (
        f"<p>Test accuracy {ev['accuracy']:.4f}, loss {ev['loss']:.4f}.</p>"
        f"{_confusion(ev['confusion_matrix'], names)}{per_class}<h3>Slices</h3>{slice_table(ev)}"
        f"{worst_images(ev, outputs)}{calibration_figures(ev.get('calibration'))}")
