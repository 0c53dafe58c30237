"""`runs compare A B`: two evaluated models (pushed versions or runs) side by side, overall and per slice, each
difference with its 95% interval: paired on the same test images when both saved their predictions."""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from components import slices
from components.evaluate import PREDICTIONS, Evaluation
from engine.artifacts import load
from engine.errors import MetadataError
from engine.html import CSS, table


def evaluation_of(store, serving_dir: Path, ref: str) -> tuple[str, Evaluation]:
    """The evaluation behind `ref`: a version number (the evaluation that blessed that pushed version) or a run
    id (its evaluate step's output), with how to name it.

    Raises:
        MetadataError: no such version or run, or it was not evaluated.
    """
    if ref.isdigit():
        found = store.lineage(serving_dir / ref).get("evaluation")
        name = f"version {ref}"
    else:
        outputs = [e["output"] for e in store.run(ref)["executions"] if e["component"] == "evaluate" and e["output"]]
        found, name = (outputs[-1] if outputs else None), f"run {ref}"
    if not found:
        raise MetadataError(f"{name}: no evaluation recorded (it stopped before evaluate); compare evaluated runs "
                            "or pushed versions")
    return name, load(found["uri"])


def newcombe(a: tuple[int, int], b: tuple[int, int], confidence: float = slices.CONFIDENCE
             ) -> tuple[float, float, float]:
    """The difference of two independent proportions b - a (each as (right, n)) and Newcombe's interval from
    their Wilson intervals.

    Example:
        >>> [round(x, 3) for x in newcombe((80, 100), (90, 100))]
        [0.1, 0.0, 0.199]
    """
    (ra, na), (rb, nb) = a, b
    pa, pb = ra / na, rb / nb
    (la, ua), (lb, ub) = slices.wilson(ra, na, confidence), slices.wilson(rb, nb, confidence)
    change = pb - pa
    return (change, change - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2),
            change + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2))


def _saved(ev: Evaluation) -> dict[str, np.ndarray] | None:
    path = Path(ev.uri) / PREDICTIONS
    if not path.is_file():
        return None  # evaluated before predictions were saved
    with np.load(path) as saved:
        return {k: saved[k] for k in saved.files}


def compare(a: tuple[str, Evaluation], b: tuple[str, Evaluation]) -> dict[str, Any]:
    """B against A: overall accuracy and every slice both measured, each with B - A and its 95% interval, and
    `shown` when the interval widened to hold over all the rows at once (Bonferroni) excludes 0; `paired` when
    both saved their predictions on the same test images (the ingested data's fingerprint and labels equal:
    then the interval comes from the images where they disagree), else they are independent samples
    (Newcombe)."""
    (name_a, ev_a), (name_b, ev_b) = a, b
    saved_a, saved_b = _saved(ev_a), _saved(ev_b)
    paired = (saved_a is not None and saved_b is not None and "data" in saved_a and "data" in saved_b
              and str(saved_a["data"]) == str(saved_b["data"]) and len(saved_a["labels"]) == len(saved_b["labels"])
              and bool(np.array_equal(saved_a["labels"], saved_b["labels"])))
    rows = []
    kept_a = [s for s in ev_a.slices if not s.get("too_small")]
    masks = (list(np.unpackbits(saved_a["masks"], axis=1, count=len(saved_a["labels"])).astype(bool))
             if paired else [None] * len(kept_a))
    theirs = {s["name"]: s for s in ev_b.slices if not s.get("too_small")}
    both = [(s, mask, theirs[s["name"]]) for s, mask in zip(kept_a, masks) if s["name"] in theirs]
    simultaneous = 1 - (1 - slices.CONFIDENCE) / (len(both) + 1)  # two-sided, over every row at once

    def interval(confidence: float, mask=None, s=None, other=None) -> tuple[float, float, float]:
        if paired:
            inside = slice(None) if mask is None else mask
            return slices.paired_difference(right_b[inside], right_a[inside], confidence)
        if s is None:
            return newcombe((round(ev_a.accuracy * n_a), n_a), (round(ev_b.accuracy * n_b), n_b), confidence)
        return newcombe((round(s["accuracy"] * s["n"]), s["n"]), (round(other["accuracy"] * other["n"]), other["n"]),
                        confidence)

    if paired:
        right_a, right_b = saved_a["predicted"] == saved_a["labels"], saved_b["predicted"] == saved_b["labels"]
        overall = ("overall", len(right_a), float(right_a.mean()), float(right_b.mean()))
    else:
        n_a = sum(c["support"] for c in ev_a.per_class) or 1
        n_b = sum(c["support"] for c in ev_b.per_class) or 1
        overall = ("overall", n_b, ev_a.accuracy, ev_b.accuracy)
    wide = interval(simultaneous)
    rows = [(*overall, *interval(slices.CONFIDENCE), wide[1] > 0 or wide[2] < 0)]
    for s, mask, other in both:
        wide = interval(simultaneous, mask, s, other)
        rows.append((s["name"], s["n"], s["accuracy"], other["accuracy"], *interval(slices.CONFIDENCE, mask, s, other),
                     wide[1] > 0 or wide[2] < 0))
    rows[1:] = sorted(rows[1:], key=lambda r: r[4])
    keys = ("slice", "images", "a", "b", "change", "low", "high")
    return {"a": name_a, "b": name_b, "paired": paired,
            "calibration_error": {"a": (ev_a.calibration or {}).get("ece"), "b": (ev_b.calibration or {}).get("ece")},
            "rows": [{**dict(zip(keys, (r[0], r[1], *(round(float(v), 4) for v in r[2:7])))), "shown": bool(r[7])}
                     for r in rows]}


def lines(result: dict[str, Any]) -> list[str]:
    """The comparison as text: one line per slice, worst change first after the overall line."""
    how = "paired on the same test images" if result["paired"] else "as independent samples"
    out = [f"{result['b']} against {result['a']}: accuracy change with its 95% interval, {how}; (shown): its "
           "interval over all the rows at once excludes 0"]
    ece = result["calibration_error"]
    if ece["a"] is not None and ece["b"] is not None:
        out.append(f"expected calibration error {ece['a']:.4f} -> {ece['b']:.4f}")
    out.append(f"{'slice':<36} {'images':>7} {'A':>7} {'B':>7}  change [95% interval]")
    for r in result["rows"]:
        shown = "  (shown)" if r["shown"] else ""
        out.append(f"{r['slice']:<36} {r['images']:>7,} {r['a']:>7.4f} {r['b']:>7.4f}  {r['change']:+.4f} "
                   f"[{r['low']:+.4f}, {r['high']:+.4f}]{shown}")
    return out


def page(result: dict[str, Any]) -> str:
    """The comparison as a self-contained HTML page: the table of `lines`, shown changes in colour."""
    rows = []
    for r in result["rows"]:
        cls = "" if not r["shown"] else "bad" if r["change"] < 0 else "ok"
        change = f"<span class='{cls}'>{r['change']:+.4f}</span>" if cls else f"{r['change']:+.4f}"
        rows.append([html.escape(r["slice"]), f"{r['images']:,}", f"{r['a']:.4f}", f"{r['b']:.4f}",
                     f"{change} [{r['low']:+.4f}, {r['high']:+.4f}]"])
    title = html.escape(f"{result['b']} against {result['a']}")
    how = "paired on the same test images" if result["paired"] else "as independent samples"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style></head>"
            f"<body><h1>{title}</h1><p>Accuracy change B - A with its 95% interval, {how}; red: shown worse, "
            f"green: shown better (by an interval that holds over all the rows at once).</p>{table(['slice', 'images', 'A', 'B', 'change [95% interval]'], rows, '')}"
            "</body></html>")
