"""The whole-build budget's policy: how a run's time left is shared between search and final training."""
from __future__ import annotations

import datetime
import math
import time

# Held back at the end of the budget for evaluate and push (with its infra check) and the run's report:
# 13 s measured for Fashion-MNIST on 2 cores, so 30 s or 3% of the budget, whichever is more.
RESERVE_SECONDS, RESERVE_SHARE = 30.0, 0.03
SEARCH_SHARE = 0.3  # of the time left once the data stages ran: the rest trains the final model
EQUAL_SCORES = 0.005  # trial scores this close are a tie, which the cheaper trial wins under a budget
SEARCH_SUBSET = 0.25  # under a budget, trials train on this share of the train split: 4x the trials
MIN_SEARCH_SECONDS = 120.0  # below this a search cannot get past its reference trial: train it longer instead
TUNED_EPOCHS, REFERENCE_EPOCHS = 10, 2  # training epochs when train.epochs is unset
BUDGET_EPOCHS = 50  # training epochs at most under a whole-build budget when train.epochs is unset
WEEK = 7 * 24 * 3600.0  # the longest budget a setting allows


def planned_epochs(cfg) -> int:
    """Training epochs at most: the configured number, else as many as the budget allows (up to 50), else
    10 after a search or 2 for the reference recipe."""
    if cfg.train.epochs is not None:
        return cfg.train.epochs
    if cfg.budget_seconds is not None:
        return BUDGET_EPOCHS
    return TUNED_EPOCHS if cfg.tune.enabled else REFERENCE_EPOCHS


def planned_schedule(cfg) -> str:
    """The learning-rate schedule `train.schedule` resolves to: `auto` is cosine under a budget."""
    if cfg.train.schedule != "auto":
        return cfg.train.schedule
    return "cosine" if cfg.budget_seconds is not None else "constant"


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
        261.0
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


def fastest_of_the_best(trials: tuple[dict, ...]) -> dict | None:
    """The trial to train under a budget: of those scoring within EQUAL_SCORES of the best, the one with
    the fewest seconds per epoch, since the time left buys it the most epochs. None without a score.

    Example:
        >>> fastest_of_the_best(({"score": 0.866, "seconds": 128, "epochs": 2},
        ...                      {"score": 0.863, "seconds": 85, "epochs": 2}))["seconds"]
        85
    """
    scored = [t for t in trials if t.get("score") is not None]
    if not scored:
        return None
    top = max(t["score"] for t in scored)
    timed = [t for t in scored if t["score"] >= top - EQUAL_SCORES and t.get("seconds") and t.get("epochs")]
    return min(timed, key=lambda t: t["seconds"] / t["epochs"]) if timed else max(scored, key=lambda t: t["score"])


def summarize(summary: dict, info: dict) -> dict:
    """The summary's `budget` section under `--budget`: the seconds each component took, what the search
    was given and each trial's seconds, the training epochs and why training ended, and the time left.
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
                              "trials": [{k: t.get(k) for k in ("trial_id", "status", "epochs", "seconds")}
                                         for t in tuning.get("trials", ())]},
        "training": plan and {k: plan.get(k) for k in ("schedule", "epochs_run", "ended", "epoch_seconds")},
    }}
