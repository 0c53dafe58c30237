"""Tune's section of the run report: the search and its trials."""
from __future__ import annotations

import html
from typing import Any

from engine.html import cell, table


def report_section(summary: dict[str, Any], outputs) -> tuple[str, str, str]:
    """The tuner, whether the search was reused, the best values and the trials table."""
    tuning = summary.get("tuning")
    if not tuning:
        return "tuning", "Tuning", "<p>Not tuned.</p>"
    columns = [c for c in ("trial_id", "status", "score", "predicted", "epochs", "epoch_seconds", "seconds",
                           "memory_mb", "peak_mb", "tuner") if any(t.get(c) is not None for t in tuning["trials"])]
    names = sorted({n for t in tuning["trials"] for n in t.get("hyperparameters", {})})
    rows = [[cell(t.get(c)) for c in columns] + [cell(t.get("hyperparameters", {}).get(n)) for n in names]
            for t in tuning["trials"]]
    best = ", ".join(f"{html.escape(k)} {cell(v)}" for k, v in sorted(tuning["best_hyperparameters"].items()))
    allotted = tuning.get("allotted_seconds")
    given = ("" if allotted is None else "; no search: the budget left too little time for one" if allotted == 0
             else f"; given {allotted:.0f} s")
    ended = {"plateau": "; ended: its trials stopped raising the predicted accuracy",
             "budget": "; ended: its share of the budget was spent"}.get(tuning.get("ended") or "", "")
    chosen = "; chosen by predicted accuracy after final training" if any(
        t.get("predicted") is not None for t in tuning["trials"]) else ""
    head = (f"<p>{html.escape(tuning['tuner'])}{', reused from an earlier search' if tuning['reused'] else ''}"
            f"{given}{ended}{chosen}; best: {best}</p>")
    return "tuning", "Tuning", head + table(columns + names, rows, "No trials (the reference model).")
