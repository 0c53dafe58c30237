"""Shared fixtures: a seed and tiny generated MNIST-format IDX datasets (no network, no real data)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from components.idx import write_idx
from engine.failpoints import ENV as FAILPOINTS, REACHED

SEED = 1234


def make_images(labels: np.ndarray, rng: np.random.Generator, side: int = 28) -> np.ndarray:
    """Learnable images: class k has a bright bar in row band k, over faint noise."""
    images = rng.integers(0, 40, size=(len(labels), side, side), dtype=np.uint8)
    for i, label in enumerate(labels):
        row = 2 + 2 * (int(label) % 10)
        images[i, row:row + 2, 4:side - 4] = rng.integers(180, 256, size=(2, side - 8), dtype=np.uint8)
    return images


def write_dataset(directory: Path, splits: dict[str, int], seed: int = SEED, side: int = 28,
                  gz: bool = True, label_noise: float = 0.0) -> Path:
    """Writes `<prefix>-images-idx3-ubyte[.gz]` and `<prefix>-labels-idx1-ubyte[.gz]` per split.

    With `label_noise`, that fraction of labels is replaced by the next class, capping accuracy.
    """
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, count in splits.items():
        labels = (np.arange(count) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = make_images(labels, rng, side)
        noisy = np.arange(count) < int(count * label_noise)
        labels[noisy] = (labels[noisy] + 1) % 10
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return directory


def start_held(command: list[str], point: str, marker: Path, env_extra: dict | None = None,
               **popen) -> subprocess.Popen:
    """Starts `command` and returns once it holds at failpoint `point` (see `engine.failpoints`),
    ready to be killed (or released) there: timed by an event in the process, never by the machine's speed.

    Raises:
        AssertionError: the process ended before it reached `point` (or took over 10 minutes).
    """
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen(command, env={**os.environ, FAILPOINTS: point, REACHED: str(marker), **(env_extra or {})},
                            **popen)
    give_up = time.monotonic() + 600  # a bound against a hang, far above any machine's time to get there
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > give_up:
            proc.kill()
            raise AssertionError(f"{command[:3]} ended with {proc.poll()} before failpoint {point}")
        time.sleep(0.05)
    return proc


@pytest.fixture
def seed() -> int:
    return SEED


@pytest.fixture
def idx_dir(tmp_path) -> Path:
    """A tiny MNIST-format dataset: 128 train and 64 test examples, gzipped."""
    return write_dataset(tmp_path / "data", {"train": 128, "t10k": 64})


@pytest.fixture(scope="session")
def examples(tmp_path_factory):
    """Ingested Examples of a tiny learnable dataset, shared by the tests of later components."""
    from components.ingest import ingest
    from components.ingest import DataConfig

    root = tmp_path_factory.mktemp("examples")
    data = write_dataset(root / "idx", {"train": 320, "t10k": 64})
    (root / "out").mkdir()
    return ingest(out_dir=root / "out", data=DataConfig(dataset=f"idx:{data}"))


@pytest.fixture(scope="session")
def stats(examples, tmp_path_factory):
    from components.statistics import statistics

    out = tmp_path_factory.mktemp("stats")
    return statistics(examples, out_dir=out)


@pytest.fixture(scope="session")
def generic_schema(tmp_path_factory):
    """The generic MNIST-family schema (ten classes) as a Schema artifact."""
    from components.schema import Schema

    out = tmp_path_factory.mktemp("generic-schema")
    shutil.copyfile(Path(__file__).parent.parent / "schemas" / "mnist_family.pbtxt", out / "schema.pbtxt")
    return Schema(uri=str(out), fingerprint="generic", source="curated:schemas/mnist_family.pbtxt")


@pytest.fixture(scope="session")
def model(examples, generic_schema, tmp_path_factory):
    """A reference CNN trained for a few epochs on the tiny learnable dataset."""
    from components.cnn import REFERENCE
    from components.train import train
    from components.tune import HyperParameters
    from components.train import TrainConfig

    hp = HyperParameters(uri="", fingerprint="ref", tuner="none", values=dict(REFERENCE), trials=())
    return train(examples, generic_schema, hp, out_dir=tmp_path_factory.mktemp("model"),
                 train=TrainConfig(epochs=6, patience=3, batch_size=32), seed=SEED)


@pytest.fixture(scope="session")
def mysql_server(tmp_path_factory):
    """A MariaDB server of its own (Debian's mariadb-server) on a loopback port, for the MySQL metadata store;
    stopped after the session. Yields its port. Skipped where no server is installed, except in CI."""
    server = shutil.which("mariadbd") or shutil.which("mysqld")
    install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    if not (server and install):
        if os.environ.get("CI"):
            pytest.fail("no MariaDB server in CI: the README's install command installs mariadb-server")
        pytest.skip("no MariaDB server installed: apt-get install mariadb-server")
    home = tmp_path_factory.mktemp("mariadb")
    subprocess.run([install, "--no-defaults", f"--datadir={home / 'data'}", "--auth-root-authentication-method=normal",
                    "--skip-test-db"], check=True, capture_output=True, timeout=300)
    with socket.socket() as probe:  # a free loopback port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([server, "--no-defaults", f"--datadir={home / 'data'}", f"--socket={home / 'sock'}",
                             f"--port={port}", "--bind-address=127.0.0.1", "--skip-grant-tables", "--user=root",
                             f"--pid-file={home / 'pid'}"], stdout=log, stderr=log)
    give_up = time.monotonic() + 300  # a bound against a hang, not a speed assumption
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > give_up:
                proc.kill()
                pytest.fail(f"MariaDB did not start: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
    yield port
    proc.terminate()
    proc.wait(timeout=120)
    log.close()
