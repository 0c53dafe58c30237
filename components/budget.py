"""The whole-build budget's policy: how a run's time left is shared between search and final training."""
from __future__ import annotations

import datetime
import math
import time

# Held back at the end of the budget for evaluate and push (with its infra check) and the run's report:
# 13 s measured for Fashion-MNIST on 2 cores, so 30 s or 3% of the budget, whichever is more.
RESERVE_SECONDS, RESERVE_SHARE = 30.0, 0.03
SEARCH_SHARE = 0.4  # at most, of the time left once the data stages ran: the rest trains the final model
SEARCH_PATIENCE = 5  # trials in a row that raise no prediction end a budgeted search (`ended: plateau`)
SEARCH_SUBSET = 0.25  # under a budget, trials train on this share of the train split: 4x the trials
MIN_SEARCH_SECONDS = 120.0  # below this a search cannot get past its reference trial: train it longer instead
TUNED_EPOCHS, REFERENCE_EPOCHS = 10, 2  # training epochs when train.epochs is unset
TRIALS = 10  # search trials when tune.max_trials is unset
UNCAPPED = 10_000  # epochs or trials under a budget unless the user caps them: the time plan ends them
WEEK = 7 * 24 * 3600.0  # the longest budget a setting allows
# A final training expected to make this many passes over the train split or more moves its images by up to
# AUTO_SHIFT pixels (train.shift unset): on Fashion-MNIST the model a 15m search chooses, trained 116 epochs,
# tested 0.9305 with it against 0.9210 without, the reference after 80 0.9277 against 0.9246 (README, "Tuning and
# training"); the reference's 18 epochs at 5m are too few to pay.
AUGMENT_PASSES, AUTO_SHIFT = 50, 1


def planned_epochs(cfg) -> int:
    """Training epochs at most: the configured number, else as many as the budget's plan allows, else
    10 after a search or 2 for the reference recipe."""
    if cfg.train.epochs is not None:
        return cfg.train.epochs
    if cfg.budget_seconds is not None:
        return UNCAPPED
    return TUNED_EPOCHS if cfg.tune.enabled else REFERENCE_EPOCHS


def planned_trials(max_trials: int | None, budgeted: bool) -> int:
    """Search trials at most: `tune.max_trials`, else as many as the budget's plan runs, else 10."""
    if max_trials is not None:
        return max_trials
    return UNCAPPED if budgeted else TRIALS


def planned_schedule(cfg) -> str:
    """The learning-rate schedule `train.schedule` resolves to: `auto` is cosine under a budget."""
    if cfg.train.schedule != "auto":
        return cfg.train.schedule
    return "cosine" if cfg.budget_seconds is not None else "constant"


def planned_shift(shift: int | None, speed: dict | None, steps: int, end: float | None) -> int:
    """Pixels of augmentation by shifting: `train.shift` when set; else AUTO_SHIFT for a training whose step probe
    (`speed`, `components.speed.fastest_step`) expects AUGMENT_PASSES passes or more (of `steps` steps) from the
    probe's time (`at`, saved: a training resumed after a kill decides alike) until `end`; else 0.

    Example:
        >>> probed = {"chosen": {"precision": "float32", "steps_per_execution": 1}, "step_ms": {"float32/spe1": 8.0},
        ...           "at": 0.0}
        >>> planned_shift(None, probed, 422, end=600.0), planned_shift(None, probed, 422, end=60.0)
        (1, 0)
    """
    if shift is not None:
        return shift
    if not speed or end is None or "at" not in speed:
        return 0
    from components.speed import chosen_ms

    passes = epochs_that_fit(0, chosen_ms(speed) * steps / 1000, speed["at"], end, UNCAPPED)
    return AUTO_SHIFT if passes >= AUGMENT_PASSES else 0


def reserve(budget: float) -> float:
    """Seconds kept for evaluate, push and the report at the end of a `budget`-second run."""
    return max(RESERVE_SECONDS, RESERVE_SHARE * budget)


def training_end(deadline: float, budget: float) -> float:
    """When final training must have finished (wall-clock seconds): the run's deadline less the reserve."""
    return deadline - reserve(budget)


def search_seconds(deadline: float, budget: float, now: float, tune_budget: float | None = None) -> float:
    """The search's share of a run ending at `deadline`: SEARCH_SHARE of what is left before the reserve,
    capped by `--tune-budget`; 0 (no search: the reference model) when that is under MIN_SEARCH_SECONDS.

    Example:
        >>> search_seconds(deadline=1000.0, budget=900.0, now=100.0)
        348.0
    """
    share = SEARCH_SHARE * (training_end(deadline, budget) - now)
    if tune_budget is not None:
        share = min(share, tune_budget)
    return share if share >= MIN_SEARCH_SECONDS else 0.0


def epochs_that_fit(done: int, epoch_seconds: float, now: float, end: float, most: int) -> int:
    """How many epochs in all (at least `done`, at most `most`) finish by `end`, when `done` took place and
    each takes `epoch_seconds`.

    Example:
        >>> epochs_that_fit(done=1, epoch_seconds=30.0, now=0.0, end=100.0, most=50)
        4
    """
    more = math.floor(max(0.0, end - now) / epoch_seconds) if epoch_seconds > 0 else most
    return max(done, min(most, done + more))


def cosine(initial: float, progress: float) -> float:
    """The learning rate at `progress` (0 to 1) through a cosine decay from `initial` to 0.

    Example:
        >>> cosine(1e-3, 0.5)
        0.0005
    """
    progress = min(max(progress, 0.0), 1.0)
    return initial * 0.5 * (1.0 + math.cos(math.pi * progress))


def trial_points(trial: dict, fraction: float) -> list[tuple[float, float]]:
    """A trial's (passes over the whole train split, validation accuracy) per epoch, from its `curve`
    ([epoch, accuracy] pairs, epochs from 0) on its `fraction` of the split."""
    return [((epoch + 1) * fraction, accuracy) for epoch, accuracy in trial.get("curve") or ()]


def predictions(trials: tuple[dict, ...], seconds: float, fraction: float) -> dict[str, float]:
    """Each scored trial's predicted validation accuracy after `seconds` of training on the whole train split,
    at the pace its epochs measured (`epoch_seconds` on its `fraction`), from the curves all trials fit
    together (`components.curves`); past the curves' plateau the prediction is flat.

    Example:
        >>> fast = {"trial_id": "0", "curve": [[0, 0.80], [1, 0.85]], "epoch_seconds": 2.0}
        >>> slow = {"trial_id": "1", "curve": [[0, 0.803], [1, 0.853]], "epoch_seconds": 20.0}
        >>> p = predictions((fast, slow), seconds=200.0, fraction=0.25)
        >>> p["0"] > p["1"]  # 0.003 better after half a pass, 10x slower: fast wins with 25 passes to 2.5
        True
    """
    from components.curves import fit

    timed = [t for t in trials if t.get("curve") and t.get("epoch_seconds")]
    curves = fit({t["trial_id"]: trial_points(t, fraction) for t in timed})
    if curves is None:
        return {}
    most = plateau_passes(tuple(timed), fraction) or math.inf
    return {t["trial_id"]: round(curves.at(t["trial_id"], min(most, max(seconds, 0.0) * fraction / t["epoch_seconds"])),
                                 4) for t in timed}


def plateau_passes(trials: tuple[dict, ...], fraction: float) -> float | None:
    """Passes over the train split after which the trials' curves say more training adds too little
    (`components.curves.PLATEAU_GAIN`), judged with the heavier tail (`components.curves.TAIL_EXPONENT`);
    None without curves."""
    from components.curves import TAIL_EXPONENT, fit

    curves = fit({t["trial_id"]: trial_points(t, fraction) for t in trials if t.get("curve")}, TAIL_EXPONENT)
    return None if curves is None else curves.plateau()


def best_predicted(trials: tuple[dict, ...], seconds: float, fraction: float) -> dict | None:
    """The trial to train under a budget: the best prediction after the `seconds` training has left
    (`predictions`); the best score when no trial has a curve; None without a score."""
    predicted = predictions(trials, seconds, fraction)
    if predicted:
        chosen = max(predicted, key=lambda t: (predicted[t], -int(t) if t.isdigit() else 0))
        return next(t for t in trials if t["trial_id"] == chosen)
    scored = [t for t in trials if t.get("score") is not None]
    return max(scored, key=lambda t: t["score"]) if scored else None


def search_plateaued(trials: tuple[dict, ...], training_end: float, fraction: float,
                     patience: int = SEARCH_PATIENCE) -> bool:
    """Whether the last `patience` trials to end (by `ended_at`) each left the best prediction where it was:
    predictions made when each trial ended, for the training the time left then buys, so a search whose
    trials find nothing better than their own cost in training time ends.

    Example:
        >>> trial = lambda i, acc: {"trial_id": str(i), "curve": [[0, acc - 0.02], [1, acc]],
        ...                         "epoch_seconds": 2.0, "ended_at": float(i)}
        >>> search_plateaued(tuple(trial(i, 0.8 + (i == 0) * 0.05) for i in range(6)), 500.0, 0.25, 5)
        True
    """
    done = sorted((t for t in trials if t.get("ended_at") is not None), key=lambda t: t["ended_at"])
    peak, since = -math.inf, 0
    for k, trial in enumerate(done):
        best = max(predictions(tuple(done[:k + 1]), training_end - trial["ended_at"], fraction).values(),
                   default=-math.inf)
        peak, since = (best, 0) if best > peak else (peak, since + 1)
    return bool(done) and since >= patience


def summarize(summary: dict, info: dict) -> dict:
    """The summary's `budget` section under `--budget`: the seconds each component took, what the search
    was given, why it ended and each trial's seconds and prediction, the training epochs, why training ended
    and the step probe's choice, and the time left.
    `info` holds the config, the run's deadline and the components' records."""
    cfg, deadline = info["cfg"], info["deadline"]
    if cfg.budget_seconds is None or deadline is None:
        return {}
    tuning, training = summary.get("tuning") or {}, summary.get("training") or {}
    plan = training.get("plan") or {}
    return {"budget": {
        "seconds": cfg.budget_seconds,
        "deadline": datetime.datetime.fromtimestamp(deadline, datetime.timezone.utc).isoformat(timespec="seconds"),
        "left_seconds": round(deadline - time.time(), 1),
        "components": {name: record["seconds"] for name, record in info["records"].items()},
        "search": tuning and {"allotted_seconds": tuning.get("allotted_seconds"), "reused": tuning.get("reused"),
                              "ended": tuning.get("ended"),
                              "trials": [{k: t.get(k) for k in ("trial_id", "status", "epochs", "seconds", "predicted")}
                                         for t in tuning.get("trials", ())]},
        "training": plan and {k: plan.get(k) for k in ("schedule", "epochs_run", "ended", "epoch_seconds",
                                                       "plateau_epochs", "speed", "shift")},
    }}
