"""The Python API used as a notebook would: the README's example, and errors raised as the errors module's."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_dataset
from engine.errors import ConfigError, RunFailed

README = Path(__file__).resolve().parent.parent / "README.md"
ROOT = README.parent


# What TensorFlow, CUDA, Beam, absl and Python warnings print when nobody keeps them quiet.
NOISE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] |^[IWEF]\d{4} |^WARNING:|Warning|oneDNN|cuda|"
                   r"TF-TRT|To enable the following instructions|warnings\.warn")


def _notebook(data: Path, where: Path) -> tuple[str, str]:
    """Runs the README's example in a fresh Python, as a notebook's kernel does; returns its stdout and stderr."""
    code = README.read_text().split("<!-- notebook -->\n```python\n")[1].split("```")[0]
    assert code.count('DATA = "fashion_mnist"') == 1
    where.mkdir()
    done = subprocess.run([sys.executable, "-c", code.replace('DATA = "fashion_mnist"', f'DATA = "idx:{data}"')],
                          cwd=where, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def test_the_readmes_notebook_example_runs_as_written_on_a_small_dataset(tmp_path):
    """The example's cells run unchanged but for `DATA`, here a small IDX set (Fashion-MNIST takes minutes);
    stderr holds the pipeline's own progress lines and none of TensorFlow's or Beam's."""
    out, err = _notebook(write_dataset(tmp_path / "data", {"train": 320, "t10k": 64}), tmp_path / "pushed")
    status, clean, drifted, scored = out.splitlines()
    assert status.split()[0] == "pushed" and float(status.split()[1]) >= 0.8
    assert status.split()[2].endswith("notebook_root/serving/1")
    assert clean == "clean" and drifted == "[]" and float(scored) >= 0.8
    assert [line for line in err.splitlines() if NOISE.search(line)] == []
    progress = [line.split()[:2] for line in err.splitlines()]
    assert ["ingest", "executed"] in progress and ["train", "executed"] in progress and ["push", "executed"] in progress

    # A third of the labels wrong caps accuracy at 0.67: the model is not blessed, and the example says so.
    noisy = write_dataset(tmp_path / "noisy", {"train": 320, "t10k": 64}, label_noise=0.34)
    out, _ = _notebook(noisy, tmp_path / "refused")
    status, *_ = out.splitlines()
    assert status.startswith("not_blessed ") and "accuracy" in status


def test_bad_arguments_and_failed_runs_raise_the_errors_modules_exceptions(tmp_path):
    from pipeline import predict, run

    data = write_dataset(tmp_path / "data", {"train": 64, "t10k": 32})
    with pytest.raises(ConfigError, match=r"config 'tune.max_trials': expected an integer at least 1 and at most "
                                          r"10000, got -5"):
        run(f"idx:{data}", root=tmp_path / "root", max_trials=-5)
    with pytest.raises(ConfigError, match=r"unknown argument 'max_trails'; expected one of "):
        run(f"idx:{data}", root=tmp_path / "root", max_trails=3)
    assert not (tmp_path / "root").exists()  # nothing ran
    with pytest.raises(ConfigError, match="predict: give images or a dataset, and a model or a serving directory"):
        predict(root=tmp_path / "root")
    (data / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(RunFailed, match="t10k-images-idx3-ubyte.gz") as failed:
        run(f"idx:{data}", root=tmp_path / "root", no_tune=True, epochs=1)
    assert failed.value.summary["status"] == "failed"


def test_a_partial_run_returns_the_verdict_of_its_gates(tmp_path):
    import numpy as np

    from components.idx import write_idx
    from pipeline import run

    data = write_dataset(tmp_path / "data", {"train": 60, "t10k": 40})
    write_idx(data / "train-labels-idx1-ubyte.gz", np.full(60, 3, np.uint8))
    summary = run(f"idx:{data}", root=tmp_path / "root", stop="validate")
    assert summary["status"] == "blocked" and "MISSING_CLASSES" in summary["error"]
    assert list(summary["components"]) == ["ingest", "statistics", "schema", "validate"]


def test_an_interrupted_run_stops_the_notebook_cell_after_it_is_recorded(monkeypatch, tmp_path):
    import pipeline.local
    from pipeline import run

    recorded = {"status": "interrupted", "error": "interrupted by SIGINT; run the same command again"}
    monkeypatch.setattr(pipeline.local, "execute", lambda *args, **kwargs: recorded)
    with pytest.raises(KeyboardInterrupt, match="interrupted by SIGINT"):
        run("idx:/nowhere", root=tmp_path / "root")
