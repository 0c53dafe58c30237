"""Training's epoch backup: weights and optimizer state in one NumPy file, written atomically, read defensively."""
from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from engine.errors import first_line

log = logging.getLogger("pipeline")
NAME = "backup.npz"
PREVIOUS = "backup.previous.npz"  # the epoch before NAME's: workers of one training that backed up a different
# last epoch (one was lost between their writes) agree on the earlier one


def save(model, work: Path, epoch: int) -> None:
    """Backs up `model` (weights and optimizer state) after `epoch` (0-based) as `work/backup.npz`.

    Written beside its place, flushed to disk and renamed over the previous backup, so a crash or a
    full disk leaves the previous backup whole. NumPy, not HDF5: h5py crashed the process (SIGSEGV) on
    a full disk, where NumPy raises OSError. A failed write removes its temporary file and raises.
    """
    import keras

    arrays = {"epoch": np.array(epoch)}
    arrays |= {f"w{i}": w for i, w in enumerate(model.get_weights())}
    # A MirroredVariable under a multi-device strategy: np.asarray alone refuses it.
    arrays |= {f"o{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.optimizer.variables)}
    _write(work / NAME, arrays, keep=work / PREVIOUS)


def _write(path: Path, arrays: dict, keep: Path | None = None) -> None:
    """`arrays` as one .npz file: written beside `path`, flushed to disk, renamed over it (the file it
    replaces renamed to `keep` first, when given)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        if keep is not None and path.is_file():
            os.replace(path, keep)  # a crash before the next rename leaves this one to restore
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a write to a file object names no file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def restore(model, work: Path, epochs: int | None = None) -> int:
    """Loads the backup in `work` into `model` and returns the epochs it holds (0 without one).

    A backup that cannot be read (truncated, corrupted, of another model) is discarded with a warning
    and training starts over from its first epoch: a bad file costs the epochs it held, never the run.
    With `epochs`, the backup holding exactly that many (the last, or the one before it) is loaded, and 0
    returned when neither does.
    """
    for leftover in work.glob(f".{NAME}.tmp-*"):  # of a process killed while writing
        leftover.unlink(missing_ok=True)
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    for path in (work / NAME, work / PREVIOUS) if epochs is not None else (work / NAME,):
        if not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as saved:  # all of it read and checked before any is used
                epoch = int(saved["epoch"])
                if epochs is not None and epoch + 1 != epochs:
                    continue
                weights = [saved[f"w{i}"] for i in range(len(model.weights))]
                state = [saved[f"o{i}"] for i in range(len(optimizer.variables))]
            expected = [tuple(v.shape) for v in (*model.weights, *optimizer.variables)]
            if [a.shape for a in (*weights, *state)] != expected or len(saved.files) != 1 + len(expected):
                raise ValueError("its arrays do not fit this model")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            log.warning("  training backup %s cannot be read (%s: %s): discarded; training starts over", path,
                        type(exc).__name__, first_line(exc, 200))
            path.unlink(missing_ok=True)
            return 0
        model.set_weights(weights)
        for variable, value in zip(optimizer.variables, state):
            variable.assign(value)
        return epoch + 1
    return 0


def save_weights(model, path: Path) -> None:
    """Writes `model`'s weights alone to `path` (NumPy, atomically: see `save`)."""
    import keras

    _write(Path(path), {f"arr_{i}": keras.ops.convert_to_numpy(w) for i, w in enumerate(model.weights)})


def load_weights(model, path: Path) -> None:
    """Loads weights that `save_weights` wrote (or Keras's `.weights.h5` of an earlier version) into `model`."""
    if str(path).endswith(".h5"):
        model.load_weights(str(path))
        return
    with np.load(path, allow_pickle=False) as saved:
        model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
