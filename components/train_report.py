"""Train's section of the run report: the learning curves and how training ended."""
from __future__ import annotations

import html
from typing import Any

from engine.html import key, svg_curves

ENDED = {"epochs": "its epochs", "budget": "the budget (no epoch starts that cannot finish in it)",
         "early_stopping": "early stopping",
         "plateau": "the plateau of the search's learning curves (more epochs would add under 0.002)"}


def report_section(summary: dict[str, Any], outputs) -> tuple[str, str, str]:
    """Training and validation curves of accuracy and loss per epoch."""
    training = summary.get("training")
    if not training:
        return "training", "Training", "<p>Not trained.</p>"
    curves = "".join(svg_curves(training["history"], m) for m in ("accuracy", "loss"))
    plan = training.get("plan") or {}
    said = (f"<p>{html.escape(plan['schedule'])} learning rate; {plan['epochs_run']} epochs of up to "
            f"{plan['epochs_most']}, ended by {ENDED.get(plan['ended'], html.escape(plan['ended']))}; the model "
            f"kept is epoch {plan['best_epoch']}'s.</p>" if plan else "")
    speed = plan.get("speed")
    if speed:
        chosen = speed["chosen"]
        said += (f"<p>Step probe ({speed['probe_seconds']:.0f} s): "
                 f"{html.escape(', '.join(f'{k} {v} ms' for k, v in speed['step_ms'].items()))}; trained with "
                 f"{html.escape(chosen['precision'])}, {chosen['steps_per_execution']} steps a call "
                 "(the model kept computes in float32).</p>")
    if plan.get("shift"):
        said += f"<p>Each training image moved by up to {plan['shift']} pixels each way (augmentation).</p>"
    return "training", "Training", f"{said}{key('train', 'validation')}<div class='grid'>{curves}</div>"
