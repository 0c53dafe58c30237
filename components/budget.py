"""The whole-build budget's policy: how a run's time left is shared between search and final training."""
from __future__ import annotations

import math

# Held back at the end of the budget for evaluate and push (with its infra check) and the run's report:
# about 35 s measured for Fashion-MNIST on 2 cores, so 45 s or 4% of the budget, whichever is more.
RESERVE_SECONDS, RESERVE_SHARE = 45.0, 0.04
SEARCH_SHARE = 0.3  # of the time left once the data stages ran: the rest trains the final model
MIN_SEARCH_SECONDS = 120.0  # below this a search cannot get past its reference trial: train it longer instead


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
        256.5
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
