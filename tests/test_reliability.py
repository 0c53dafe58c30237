"""Fault injection: a disk that fills up mid-run; nothing half-written, and the same command then completes."""
import json
import resource
import shutil
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



def test_a_metadata_store_that_cannot_grow_stops_the_run_in_one_line_and_the_rerun_reuses_what_finished(tmp_path):
    """The store's file may not grow (a file-size limit: SQLite's write is refused as on a full disk). A new store
    fails creating its tables and one in use fails recording a run; either way one line names the store and says
    to free space, without the record MLMD was writing (a ~1 KB proto) and without advice to move the store aside."""
    data = write_dataset(tmp_path / "data", {"train": 128, "t10k": 64})
    root, store = tmp_path / "root", tmp_path / "root" / "metadata.sqlite"
    full = f"{store}: disk full (disk I/O error: the metadata store cannot grow); free space and run again: " \
           "finished components are reused"

    def run(to, limit=None):
        def cap():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        return subprocess.run([sys.executable, "-m", "pipeline", "run", "--dataset", f"idx:{data}", "--root", str(root),
                               "--to", to, "--json"], cwd=REPO, capture_output=True, text=True,
                              preexec_fn=cap if limit else None, timeout=600)

    done = run("statistics", 16 << 10)  # the lock and the root's id fit; the new store's tables do not
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert_one_line_error(done.stderr, full)
    assert "move it aside" not in done.stderr and len(done.stderr) < 400
    assert run("statistics").returncode == 0
    # Room for a run's start and its cached steps' records (what a cached `--to statistics` run adds), not for
    # schema's and validate's: those run, and their records do not fit.
    shutil.copyfile(store, tmp_path / "store.before")
    assert run("statistics").returncode == 0
    room = store.stat().st_size
    shutil.copyfile(tmp_path / "store.before", store)
    done = run("validate", room)
    assert done.returncode == 1 and json.loads(done.stdout)["status"] == "failed", done.stderr
    assert_one_line_error(done.stderr, full)
    assert done.stderr.count("disk full") == 1 and "type_id" not in done.stderr  # said once, no proto
    done = run("validate")
    components = json.loads(done.stdout)["components"]
    assert done.returncode == 0 and {c["state"] for c in components.values()} == {"cached"}, done.stderr

CLEAN_UP_AFTER_A_FULL_DISK = """
import os, resource, signal, sys, zipfile
from pipeline.local import guarded

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (10000, 10000))

def save_weights():  # as Keras writes a .keras file: the archive is left to be collected, closing it fails again
    archive = zipfile.ZipFile(sys.argv[1], "w")
    archive.writestr("weights", os.urandom(100000))

class Other:
    def __del__(self):
        raise ValueError("another failure in clean-up")

print(guarded(save_weights, "done")[1])
Other()
"""


def test_a_full_disk_is_one_line_without_the_zip_files_clean_up_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-c", CLEAN_UP_AFTER_A_FULL_DISK, str(tmp_path / "model.keras")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("the pipeline root: disk full (File too large)"), done.stderr
    assert "ZipFile" not in done.stderr and "File too large" not in done.stderr, done.stderr
    assert "ValueError: another failure in clean-up" in done.stderr  # any other failure still shows


@pytest.mark.slow
def test_two_builds_sharing_a_serving_directory_never_push_past_the_regression_gate(tmp_path):
    """Two roots, one serving directory. The stronger build is held at a failpoint inside its push (holding
    the serving directory's lock, nothing renamed yet) while the weaker build evaluates with nothing
    serving and reaches its own push, which waits for the lock (its log says so: an event, not timing).
    Released, the stronger pushes version 1; the weaker is then judged again against it and refused."""
    import time

    from conftest import start_held
    from engine.failpoints import RELEASE

    data = write_dataset(tmp_path / "data", {"train": 320, "t10k": 80}, seed=1)
    serving, release = tmp_path / "serving", tmp_path / "release"
    (tmp_path / "one-step.yaml").write_text("train:\n  batch_size: 4096\n")  # a batch over the split: one step
    (tmp_path / "small-batches.yaml").write_text("train:\n  batch_size: 16\n")
    base = [sys.executable, "-m", "pipeline", "run", "--dataset", f"idx:{data}", "--serving-dir", str(serving),
            "--no-tune", "--min-accuracy", "0", "--max-regression", "0", "--json"]
    strong = start_held([*base, "--root", str(tmp_path / "strong"), "--config", str(tmp_path / "small-batches.yaml"),
                         "--epochs", "3"], "push.checked", tmp_path / "reached", {RELEASE: str(release)}, cwd=REPO,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "weak.log"
    with open(log, "w") as err_file:
        weak = subprocess.Popen([*base, "--root", str(tmp_path / "weak"), "--config", str(tmp_path / "one-step.yaml"),
                                 "--epochs", "1"], cwd=REPO, stdout=subprocess.PIPE, stderr=err_file, text=True)
        try:
            give_up = time.monotonic() + 600  # a bound against a hang, far above any machine's time to get there
            while "waiting for another push to" not in log.read_text():
                assert weak.poll() is None and time.monotonic() < give_up, log.read_text()
                time.sleep(0.05)
        finally:
            release.touch()
        out, _ = weak.communicate(timeout=600)
    strong_out, strong_err = strong.communicate(timeout=600)
    first = json.loads(strong_out)
    assert strong.returncode == 0 and first["push"]["version"] == 1, strong_err
    summary = json.loads(out)
    err = log.read_text()
    assert weak.returncode == 4 and summary["status"] == "not_blessed" and summary["pushed_model"] is None, err
    assert summary["evaluation"]["baseline"] is None and summary["evaluation"]["blessed"]  # judged alone first
    assert "Blessed by evaluation, refused at push: model not blessed: version 1" in open(summary["report"]).read()
    assert_one_line_error(err, "model not blessed: version 1 of", "was pushed after this model was evaluated",
                          "beyond max_regression 0.0000")
    assert sorted(p.name for p in serving.iterdir()) == ["1"]
    assert json.loads((serving / "1" / "model_info.json").read_text())["accuracy"] == first["evaluation"]["accuracy"]


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


@pytest.mark.slow
def test_sigterm_or_sigint_records_the_run_interrupted_at_once_and_the_rerun_resumes(tmp_path):
    import os

    from conftest import start_held

    data = write_dataset(tmp_path / "data", {"train": 320, "t10k": 64}, seed=1)
    root = tmp_path / "root"
    command = [sys.executable, "-m", "pipeline", "run", "--dataset", f"idx:{data}", "--root", str(root), "--no-tune",
               "--epochs", "3", "--min-accuracy", "0", "--json"]
    for signum, point in ((signal.SIGTERM, "train.epoch_begin#2"), (signal.SIGINT, "push.staged")):
        proc = start_held(command, point, tmp_path / "reached", cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
        os.kill(proc.pid, signum)
        out, err = proc.communicate(timeout=300)
        name = signal.Signals(signum).name
        assert proc.returncode == 130, err
        assert_one_line_error(err, f"interrupted by {name}", "finished components are reused")
        summary = json.loads(out)
        assert summary["status"] == "interrupted" and name in summary["error"]
        assert json.loads((root / "runs" / summary["run_id"] / "summary.json").read_text()) == summary
        listed = subprocess.run([sys.executable, "-m", "pipeline", "runs", "list", "--root", str(root), "--json"],
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        newest = json.loads(listed.stdout)[-1]  # recorded at once, not by the next run
        assert (newest["run_id"], newest["status"]) == (summary["run_id"], "interrupted")
        assert not list((root / "serving").glob(".staging-*"))  # a push stopped midway leaves no staging
    assert summary["components"]["train"]["state"] == "executed"  # the first run trained 1 epoch, this one 2
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    final = json.loads(done.stdout)
    assert done.returncode == 0 and final["status"] == "pushed", done.stderr
    assert final["components"]["train"]["state"] == "cached" and final["push"]["version"] == 1



def test_a_signal_once_the_runs_records_are_final_leaves_the_exit_code_they_record(tmp_path):
    """SIGTERM right after the summary and the store recorded how the run ended, and SIGINT as the command exits
    (failpoints at which the process raises them itself): the process still exits with the run's own code, here 3
    (blocked), not 143 or 130, and its records, report included, say the same."""
    import gzip
    import os

    import numpy as np

    from components.idx import write_idx
    from engine.failpoints import ENV, REACHED
    from engine.metadata import Metadata
    from pipeline.config import Config, override

    data = write_dataset(tmp_path / "data", {"train": 60, "t10k": 20})
    labels = np.frombuffer(gzip.open(data / "train-labels-idx1-ubyte.gz").read()[8:], np.uint8).copy()
    labels[5] = 12  # out of range: validation blocks the run
    write_idx(data / "train-labels-idx1-ubyte.gz", labels)
    root, reached = tmp_path / "root", tmp_path / "reached"
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", "--dataset", f"idx:{data}", "--root", str(root),
                           "--json"], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, ENV: "run.recorded=SIGTERM,command.exit=SIGINT", REACHED: str(reached)})
    assert reached.read_text().split()[0] == "command.exit"  # the last of the two failpoints was reached
    summary = json.loads(done.stdout)
    assert done.returncode == 3 and summary["status"] == "blocked", done.stderr
    assert_one_line_error(done.stderr, "data validation failed", "feature 'label'")
    run_dir = root / "runs" / summary["run_id"]
    assert json.loads((run_dir / "summary.json").read_text()) == summary and (run_dir / "report.html").is_file()
    assert Metadata.open(override(Config(), root=str(root)), create=False).run(summary["run_id"])["status"] == "blocked"

@pytest.mark.slow
def test_a_disk_that_fills_up_during_training_fails_the_run_in_one_line_and_leaves_no_temporary_files(tmp_path):
    # The data's files fit in 1.5 MiB; the model and its backup (weights and Adam's state, about 2.7 MB) do not.
    data = write_dataset(tmp_path / "data", {"train": 320, "t10k": 64}, seed=1)
    root = tmp_path / "root"
    code, out, err = _run(root, data, 3 << 19)
    assert code == 1 and json.loads(out)["status"] == "failed"
    assert_one_line_error(err, "disk full (File too large)", "finished components are reused")
    assert json.loads(out)["components"]["statistics"]["state"] == "executed"
    left = [p for p in root.rglob("*") if ".tmp-" in p.name or "partial" in p.name]
    assert left == []
    code, out, err = _run(root, data)
    assert code == 0 and json.loads(out)["status"] == "pushed", err
    assert json.loads(out)["components"]["ingest"]["state"] == "cached"


@pytest.mark.slow
def test_a_disk_that_fills_up_during_the_search_stops_it_naming_the_file(tmp_path):
    """A trial process whose weights do not fit reports the write that failed; the search stops at once
    (every later trial would fail the same way) and the run fails with the one-line disk-full error."""
    data = write_dataset(tmp_path / "data", {"train": 320, "t10k": 64}, seed=1)
    root = tmp_path / "root"

    def cap():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (600_000, 600_000))  # the data fits; a model's weights do not

    done = subprocess.run([sys.executable, "-m", "pipeline", "run", "--dataset", f"idx:{data}", "--root", str(root),
                           "--max-trials", "2", "--max-epochs", "1", "--epochs", "1", "--min-accuracy", "0", "--json"],
                          cwd=REPO, capture_output=True, text=True, preexec_fn=cap, timeout=600)
    assert done.returncode == 1 and json.loads(done.stdout)["status"] == "failed"
    assert_one_line_error(done.stderr, "checkpoint.npz: disk full (File too large)")
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name or "partial" in p.name]
