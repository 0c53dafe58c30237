"""Fault injection: a disk that fills up mid-run; nothing half-written, and the same command then completes."""
import json
import resource
import signal
import subprocess
import sys

import pytest

from conftest import write_dataset
from test_cli import REPO, assert_one_line_error

LIMIT = 1 << 20  # no file may grow past 1 MiB: the train split's TFRecords need about 2


def _run(root, data, limit=None):
    def cap():  # what a full disk does to a write, for this process only: EFBIG instead of SIGXFSZ
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run([sys.executable, "-m", "pipeline", "run", "--dataset", f"idx:{data}", "--root", str(root),
                           "--no-tune", "--epochs", "1", "--min-accuracy", "0", "--json"], cwd=REPO,
                          capture_output=True, text=True, preexec_fn=cap if limit else None, timeout=600)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.slow
def test_a_full_disk_stops_the_run_cleanly_and_the_rerun_completes(tmp_path):
    data = write_dataset(tmp_path / "data", {"train": 4000, "t10k": 100}, seed=1)
    root = tmp_path / "root"
    code, out, err = _run(root, data, LIMIT)
    assert code == 1
    assert_one_line_error(err, "train/data-00000-of-00001.tfrecord.gz: disk full (File too large)",
                          "finished components are reused")
    assert json.loads(out)["status"] == "failed"
    assert not [p for p in (root / "artifacts").rglob("*") if ".tmp-" in p.name]  # nothing half-written
    code, out, err = _run(root, data)
    assert code == 0 and json.loads(out)["status"] == "pushed", err


def test_every_test_the_reliability_doc_names_exists():
    """`docs/reliability.md` maps promises to tests: each `tests/FILE.py::NAME` (or `::NAME` after one) it
    names must be a test function of that file."""
    import ast
    import re

    doc = (REPO / "docs" / "reliability.md").read_text()
    named, missing = 0, []
    for row in doc.splitlines():
        current = None
        for path, name in re.findall(r"(tests/\w+\.py)?::(\w+)", row):  # `::NAME` is of the file named before
            current = path or current
            tree = ast.parse((REPO / current).read_text())
            functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
            named += 1
            if name not in functions:
                missing.append(f"{current}::{name}")
    for path in re.findall(r"`(tests/[\w/]+\.py)`", doc):
        if not (REPO / path).is_file():
            missing.append(path)
    assert named > 30 and missing == []
