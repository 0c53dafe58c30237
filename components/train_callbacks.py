"""Training's callbacks: the history, best model, plan and stopping that survive a kill, and the epoch backup."""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

from components import checkpoint
from engine.errors import TrainingDiverged
from engine.failpoints import failpoint
from engine.files import write_text

log = logging.getLogger("pipeline")
MONITOR = "val_accuracy"


def resumable(work: Path, patience: int, epochs: int, schedule: str = "constant", learning_rate: float = 1e-3,
               end: float | None = None, agreed=lambda planned: planned, plateau: int | None = None):
    """A callback keeping the history and the best epoch's model in `work`, and deciding when to stop.

    It stops early after `patience` epochs without a better score, except under the cosine `schedule`,
    which sets the learning rate of each epoch and ends at the epochs planned. With `end` (a time), the
    epochs planned are those that finish by then, re-planned after each epoch from the epochs' pace
    (`components.budget.epochs_that_fit`), and `agreed` makes every worker of a multi-worker training plan
    the same (`components.devices.agree`). With `plateau` too, no more epochs than that are planned: the
    learning curves say more would add too little. All of it survives a kill: a restarted fit (BackupAndRestore
    restores the weights and the epoch) continues the same history, best score, patience and plan.
    """
    import keras

    from components.budget import cosine, epochs_that_fit

    class Resumable(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.history_path, self.best_path = work / "history.json", work / "best.keras"
            self.previous_best = work / "best.previous.keras"  # the best before the last epoch's
            self.rows = json.loads(self.history_path.read_text()) if self.history_path.is_file() else []
            self.ended, self.plateau = None, plateau if end is not None else None

        @property
        def best_epoch(self) -> int | None:
            scores = [row[MONITOR] for row in self.rows]
            return self.rows[scores.index(max(scores))]["epoch"] if scores else None

        @property
        def planned(self) -> int:
            """Epochs in all: `epochs`, or those that finish in the time left at the pace so far."""
            most = min(epochs, plateau) if end is not None and plateau else epochs
            if end is None or not self.rows:
                return most
            # The first epoch also traces the graphs: the pace comes from later ones once there are any.
            # 5% over it covers the checkpoints written between epochs.
            paced = [row["seconds"] for row in self.rows[1:]] or [self.rows[0]["seconds"]]
            return int(agreed(epochs_that_fit(len(self.rows), 1.05 * sum(paced) / len(paced), time.time(), end,
                                              most)))

        def step_back(self, epochs: int) -> None:
            """Forgets the epochs after the first `epochs` (another worker backed up one fewer)."""
            if any(row["epoch"] >= epochs for row in self.rows) and self.best_epoch is not None \
                    and self.best_epoch >= epochs and self.previous_best.is_file():
                os.replace(self.previous_best, self.best_path)
            self.rows = [row for row in self.rows if row["epoch"] < epochs]

        def stopping(self) -> str | None:
            """Why training ends after the epochs so far, or None to go on."""
            if not self.rows:
                return None
            last = self.rows[-1]["epoch"]
            if last + 1 >= epochs:
                return "epochs"
            if end is not None and plateau and last + 1 >= plateau:
                return "plateau"
            if last + 1 >= self.planned:
                return "budget"
            if schedule == "constant" and last - self.best_epoch >= patience:
                return "early_stopping"
            return None

        def on_epoch_begin(self, epoch, logs=None):
            failpoint("train.epoch_begin")  # the previous epoch is backed up
            if schedule == "cosine":
                self.model.optimizer.learning_rate = cosine(learning_rate, epoch / max(self.planned, epoch + 1))
            self.start = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            # Before anything of the epoch is kept: weights that went non-finite would otherwise be
            # trained on for the remaining epochs while the best earlier epoch is pushed without a word.
            diverged = [f"{k} is {float(v)}" for k, v in (logs or {}).items()
                        if k.endswith("loss") and not math.isfinite(float(v))]
            if diverged:
                raise TrainingDiverged(f"train: epoch {epoch + 1}: {', '.join(diverged)}; training diverged: lower "
                                       "the learning rate (or check the data), then run again")
            row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()},
                   "seconds": round(time.monotonic() - self.start, 2),
                   # a MirroredVariable under a multi-device strategy: float() alone refuses it
                   "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))}
            # An epoch re-run after a kill replaces its earlier record.
            self.rows = [r for r in self.rows if r["epoch"] < epoch] + [row]
            if self.best_epoch == epoch:
                tmp = work / "best-partial.keras"
                try:
                    self.model.save(tmp)
                    if self.best_path.is_file():
                        os.replace(self.best_path, self.previous_best)
                    os.replace(tmp, self.best_path)  # never a half-written best model
                finally:
                    tmp.unlink(missing_ok=True)  # a disk that filled up mid-write leaves nothing behind
            write_text(self.history_path, json.dumps(self.rows))
            metrics = " ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items()))
            log.info("  epoch %d/%d %s (%.1fs)", epoch + 1, self.planned, metrics, row["seconds"])
            failpoint("train.epoch_end")  # logged, not yet backed up: a kill here redoes this epoch
            self.ended = self.stopping()
            if self.ended:
                self.model.stop_training = True

    return Resumable()


def backup(work: Path):
    """A callback backing up weights and optimizer state after each epoch (`components.checkpoint`)."""
    import keras

    class BackUp(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            checkpoint.save(self.model, work, epoch)

    return BackUp()
