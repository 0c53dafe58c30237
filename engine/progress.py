"""Progress bars on stderr for long steps, drawn only on a terminal: logs keep the one line per step."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TextIO

WIDTH = 24
REDRAW_SECONDS = 0.2


class Bar:
    """A progress bar of `total` steps labelled `label`.

    On a terminal it is redrawn in place (at most five times a second) and left in its final state;
    in a log file or pipe (or with `CI` set) it writes nothing, as the step's own log line says it all.

    Example:
        >>> with Bar("ingest train", total=3) as bar:  # on a terminal: ingest train [####...] 1/3 0.0s
        ...     for _ in range(3):
        ...         bar.update()
        >>> bar.line()
        '  ingest train [########################] 3/3 ...s'
    """

    def __init__(self, label: str, total: int, stream: TextIO | None = None, unit: str = ""):
        self.label, self.total, self.unit = label, max(int(total), 0), unit
        self.stream = stream if stream is not None else sys.stderr
        self.done, self.start, self._drawn = 0, time.monotonic(), 0.0
        self.live = bool(getattr(self.stream, "isatty", lambda: False)()) and not os.environ.get("CI")

    def line(self) -> str:
        """The bar as text: label, bar, done/total, elapsed seconds."""
        share = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = round(share * WIDTH)
        unit = f" {self.unit}" if self.unit else ""
        return (f"  {self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {self.done}/{self.total}{unit} "
                f"{time.monotonic() - self.start:.1f}s")

    def update(self, steps: int = 1, done: int | None = None) -> None:
        """Advances by `steps`, or sets the count to `done`."""
        self.done = done if done is not None else self.done + steps
        now = time.monotonic()
        if self.live and now - self._drawn >= REDRAW_SECONDS:
            self._drawn = now
            self.stream.write("\r" + self.line() + "\x1b[K")
            self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\r" + self.line() + "\x1b[K\n")
            self.stream.flush()

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def keras_callback(label: str, epochs: int, steps: int | None, report: Path | None = None):
    """A Keras callback drawing one bar per epoch over its batches.

    With `report`, it instead writes `{"epoch", "epochs", "step", "steps"}` to that JSON file (at most
    five times a second), for a parent process to draw (see `follow`).
    """
    import keras

    class EpochBar(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.bar, self.epoch, self.last = None, 0, 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            if report is None:
                self.bar = Bar(f"{label} epoch {epoch + 1}/{epochs}", steps or 0, unit="batches")

        def on_train_batch_end(self, batch, logs=None):
            if self.bar is not None:
                self.bar.update(done=batch + 1)
            elif time.monotonic() - self.last >= REDRAW_SECONDS:
                self.last = time.monotonic()
                tmp = report.with_suffix(".tmp")
                tmp.write_text(json.dumps({"epoch": self.epoch, "epochs": epochs, "step": batch + 1,
                                           "steps": steps or 0}))
                os.replace(tmp, report)

        def on_epoch_end(self, epoch, logs=None):
            if self.bar is not None:
                self.bar.total = max(self.bar.total, self.bar.done)
                self.bar.close()
                self.bar = None

    return EpochBar()


def follow(report: Path, bar: Bar) -> None:
    """Updates `bar` (over epochs × steps) from the file a child process's `keras_callback` writes."""
    try:
        state = json.loads(report.read_text())
    except (OSError, ValueError):
        return
    bar.total = state["epochs"] * state["steps"] if state["steps"] else state["epochs"]
    bar.update(done=state["epoch"] * state["steps"] + state["step"] if state["steps"] else state["epoch"])
