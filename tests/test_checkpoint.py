"""Tests of training's epoch backup: atomic on a full disk, and an unreadable backup costs its epochs, not the run."""
import logging
import subprocess
import sys

import numpy as np
import pytest

from components import checkpoint
from components.cnn import REFERENCE
from components.train import train
from components.train import TrainConfig
from components.tune import HyperParameters
from test_cli import REPO

REFERENCE_HP = HyperParameters(uri="", fingerprint="x", tuner="none", values=dict(REFERENCE), trials=())


def _model(seed=0):
    import keras

    from components.cnn import build_model

    keras.utils.set_random_seed(seed)
    model = build_model(REFERENCE)
    model.optimizer.build(model.trainable_variables)
    return model


def test_a_backup_restores_weights_and_optimizer_state(tmp_path):
    saved = _model(1)
    saved.optimizer.iterations.assign(7)
    checkpoint.save(saved, tmp_path, epoch=2)
    fresh = _model(2)
    assert checkpoint.restore(fresh, tmp_path) == 3
    assert all(np.array_equal(a, b) for a, b in zip(saved.get_weights(), fresh.get_weights()))
    assert int(fresh.optimizer.iterations.numpy()) == 7
    assert [p.name for p in tmp_path.iterdir()] == ["backup.npz"]  # no temporary file beside it


@pytest.mark.parametrize("damage", ["truncated", "garbage", "another model"])
def test_an_unreadable_backup_is_discarded_with_a_warning(tmp_path, caplog, damage):
    model = _model()
    checkpoint.save(model, tmp_path, epoch=4)
    path = tmp_path / checkpoint.NAME
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 100)
    else:
        np.savez(path, epoch=np.array(1), w0=np.zeros(3))
    before = [w.copy() for w in model.get_weights()]
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        assert checkpoint.restore(model, tmp_path) == 0
    assert f"training backup {path} cannot be read" in caplog.text and "discarded" in caplog.text
    assert not path.exists() and all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_a_full_disk_while_backing_up_raises_and_keeps_the_previous_backup(tmp_path):
    """In a process whose files may not grow past 64 KiB: the write fails with EFBIG (no crash), its
    temporary file is removed and the previous backup is still the one restored."""
    script = f"""
import errno, resource, signal, sys
sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(REPO / 'tests')!r})
from pathlib import Path
from test_checkpoint import _model
from components import checkpoint
work = Path({str(tmp_path)!r})
model = _model()
checkpoint.save(model, work, epoch=0)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
try:
    checkpoint.save(model, work, epoch=1)
except OSError as exc:
    print("refused", errno.errorcode[exc.errno])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "refused EFBIG", done.stderr[-2000:]
    assert [p.name for p in tmp_path.iterdir()] == ["backup.npz"]
    assert checkpoint.restore(_model(), tmp_path) == 1  # epoch 0's backup, whole


def test_training_with_an_unreadable_backup_starts_over_and_finishes(examples, generic_schema, tmp_path, seed):
    work = tmp_path / "work"
    work.mkdir()
    (work / checkpoint.NAME).write_bytes(b"PK\x03\x04 half a backup")  # as a full disk once left it
    (work / "history.json").write_text('[{"epoch": 0, "val_accuracy": 0.99, "seconds": 1.0}]')
    model = train(examples, generic_schema, REFERENCE_HP, out_dir=tmp_path, seed=seed, work_dir=work,
                  train=TrainConfig(epochs=2, batch_size=64))
    assert model.plan["epochs_run"] == 2 and model.history["val_accuracy"][0] != 0.99  # its epochs run again
