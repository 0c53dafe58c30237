"""End-to-end tests of `python -m pipeline run`: summary, caching, exit codes and one-line errors."""
import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from conftest import write_dataset
from components.idx import read_idx, write_idx
from test_formats import write_huge_png

REPO = Path(__file__).resolve().parent.parent
FAST = ["--max-trials", "2", "--max-epochs", "1", "--epochs", "2"]


def cli(*args, env=None):
    """Runs the CLI as a user would; returns (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def inverted_copy(source: Path, target: Path) -> Path:
    """A copy of an IDX dataset with every image inverted (255 - x): the same labels, drifted pixels."""
    target.mkdir()
    for path in source.iterdir():
        array = read_idx(path)
        write_idx(target / path.name, 255 - array if "images" in path.name else array)
    return target


def assert_one_line_error(stderr, *fragments):
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Train is learnable; a quarter of the test labels are wrong, so accuracy stays below 0.8."""
    root = tmp_path_factory.mktemp("cli")
    write_dataset(root / "data", {"train": 320}, seed=1)
    write_dataset(root / "test", {"t10k": 80}, seed=2, label_noise=0.25)
    for path in (root / "test").iterdir():
        path.rename(root / "data" / path.name)
    return root


@pytest.fixture(scope="module")
def _first_run_once(data):
    code, out, err = cli("run", "--dataset", f"idx:{data / 'data'}", "--root", data / "root", *FAST,
                         "--min-accuracy", "0", "--json")
    shutil.copytree(data / "root", data / "root.after-first-run", symlinks=True)
    return code, out, err


@pytest.fixture
def first_run(_first_run_once, data):
    """The first run's (code, stdout, stderr), its root just as that run left it, whatever tests ran before."""
    shutil.rmtree(data / "root")
    shutil.copytree(data / "root.after-first-run", data / "root", symlinks=True)
    return _first_run_once


def test_run_pushes_and_prints_the_summary(first_run, data):
    code, out, err = first_run
    assert code == 0, err
    summary = json.loads(out)  # stdout holds the JSON object and nothing else
    assert summary["status"] == "pushed" and summary["error"] is None
    saved = json.loads((data / "root" / "runs" / summary["run_id"] / "summary.json").read_text())
    assert saved == summary
    assert summary["dataset"]["counts"]["test"] == 80 and summary["dataset"]["source"].startswith("idx:")
    assert set(summary["components"]) == {"ingest", "statistics", "schema", "validate", "tune", "train",
                                          "evaluate", "push"}
    assert {c["state"] for c in summary["components"].values()} == {"executed"}
    assert summary["anomalies"] == [] and summary["tuning"]["tuner"] == "hyperband"
    skew = summary["drift"]
    assert {d["feature"] for d in skew} >= {"label", "mean_intensity", "center_col"}
    assert all(d["comparison"] == "skew: train vs test" and not d["drifted"] for d in skew)
    assert len(summary["tuning"]["trials"]) == 2 and summary["tuning"]["best_hyperparameters"]
    assert not summary["tuning"]["reused"] and all(t["seconds"] > 0 for t in summary["tuning"]["trials"])
    assert all(t["deterministic"] is False for t in summary["tuning"]["trials"])  # op determinism only on request
    assert summary["evaluation"]["blessed"] and 0 < summary["evaluation"]["accuracy"] < 0.8
    assert summary["pushed_model"] == str(data / "root" / "serving" / "1")
    assert "ingest" in err and "push" in err  # progress lines go to stderr
    logs = Path(summary["training"]["tensorboard"])
    assert logs == data / "root" / "runs" / summary["run_id"] / "tensorboard"
    assert list((logs / "train").rglob("events.out.tfevents.*"))  # training's TensorBoard logs
    assert {p.name for p in (logs / "tune").iterdir()} == {t["trial_id"] for t in summary["tuning"]["trials"]}
    assert summary["push"]["version"] == 1 and "same classes" in summary["push"]["infra_check"]

    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    served = tf.saved_model.load(summary["pushed_model"]).signatures["serving_default"](images=tf.constant(images))
    assert served["class_ids"].shape == (3,) and served["probabilities"].shape == (3, 10)


def test_predict_png_files_and_a_dataset_split(first_run, data, tmp_path):
    summary = json.loads(first_run[1])
    images = read_idx(data / "data" / "t10k-images-idx3-ubyte.gz")[:20]
    files = []
    for i, image in enumerate(images):
        files.append(tmp_path / f"{i:02d}.png")
        files[-1].write_bytes(tf.io.encode_png(image[..., None]).numpy())
    code, out, err = cli("predict", "--serving-dir", data / "root" / "serving", *files, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["model"] == summary["pushed_model"] and len(result["predictions"]) == 20
    served = tf.saved_model.load(summary["pushed_model"]).signatures["serving_default"](images=tf.constant(images))
    assert [p["class_id"] for p in result["predictions"]] == served["class_ids"].numpy().tolist()
    assert [p["input"] for p in result["predictions"]] == [str(f) for f in files]

    code, out, err = cli("predict", "--model", summary["pushed_model"], "--dataset", f"idx:{data / 'data'}:test",
                         "--limit", "1000", "--root", data / "root", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["count"] == 80 and result["split"] == "test"
    assert result["accuracy"] == pytest.approx(summary["evaluation"]["accuracy"], abs=1e-6)
    code, out, err = cli("predict", "--serving-dir", data / "root" / "serving", "--dataset",
                         f"idx:{data / 'data'}:test", "--limit", "5", "--root", data / "root")
    assert code == 0 and len(out.splitlines()) == 6 and out.splitlines()[-1].startswith("accuracy "), err


@pytest.mark.parametrize("args, message", [
    (("--serving-dir", "{tmp}/nothing", "{tmp}/a.png"), "nothing: no pushed model version"),
    (("--serving-dir", "{serving}", "{tmp}/missing.png"), "missing.png: cannot read"),
    (("--serving-dir", "{serving}", "{tmp}/a.png", "{tmp}/text.png"), "text.png: not a readable PNG or JPEG image"),
    (("--serving-dir", "{serving}", "{tmp}/huge.png"), "huge.png: 20000x20000 pixels, over the limit"),
    (("--model", "{tmp}", "{tmp}/a.png"), "not a SavedModel directory"),
    (("--model", "{tmp}/corrupt", "{tmp}/a.png"), "corrupt: the SavedModel cannot be loaded (OSError"),
])
def test_predict_bad_inputs(first_run, data, tmp_path, args, message):
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "saved_model.pb").write_bytes(b"\x08 not a protocol buffer")
    (tmp_path / "a.png").write_bytes(tf.io.encode_png(np.zeros((28, 28, 1), np.uint8)).numpy())
    (tmp_path / "text.png").write_text("hello")
    write_huge_png(tmp_path / "huge.png")
    filled = [a.format(tmp=tmp_path, serving=data / "root" / "serving") for a in args]
    code, out, err = cli("predict", *filled)
    assert code == 1 and out == ""
    assert_one_line_error(err, message)


@pytest.mark.slow
def test_baseline_comparison_blocks_a_weaker_model(first_run, data):
    first = json.loads(first_run[1])
    assert first["evaluation"]["baseline"] is None  # the root's first model: nothing serves yet
    assert "no baseline: only absolute thresholds apply" in first["evaluation"]["reasons"]
    assert len(first["evaluation"]["per_class"]) == 10 and len(first["evaluation"]["confusion_matrix"]) == 10
    root = data / "root"
    base = ("run", "--dataset", f"idx:{data / 'data'}", "--root", root, "--min-accuracy", "0", "--json")

    # A new build (another seed) is compared with the model serving now.
    code, out, err = cli(*base, *FAST, "--seed", "7", "--max-regression", "1")
    second = json.loads(out)
    assert code == 0, err
    assert second["evaluation"]["baseline"] == {"version": 1, "accuracy": pytest.approx(
        first["evaluation"]["accuracy"], abs=1e-6)}
    assert second["push"]["version"] == 2 and "fresh process" in second["push"]["infra_check"]

    # One gradient step of the reference (a batch larger than the split) is worse than what serves on any
    # machine's arithmetic: not blessed, nothing pushed.
    one_step = root.parent / "one-step.yaml"
    one_step.write_text("train:\n  batch_size: 4096\n")
    code, out, err = cli(*base, "--config", one_step, "--no-tune", "--epochs", "1", "--max-regression", "0")
    weak = json.loads(out)
    assert code == 4 and weak["status"] == "not_blessed", err
    assert weak["evaluation"]["baseline"]["version"] == 2
    assert weak["evaluation"]["accuracy"] < weak["evaluation"]["baseline"]["accuracy"]
    assert_one_line_error(err, "model not blessed: accuracy", "vs baseline version 2", "beyond max_regression 0.0000")
    assert ">= min_accuracy" not in err  # only the checks that failed are given as reasons
    assert weak["evaluation"]["failed"] == [r for r in weak["evaluation"]["reasons"] if "beyond" in r]
    assert sorted(p.name for p in (root / "serving").iterdir()) == ["1", "2"]


def test_second_run_is_fully_cached(first_run, data):
    first = json.loads(first_run[1])
    code, out, err = cli("run", "--dataset", f"idx:{data / 'data'}", "--root", data / "root", *FAST,
                         "--min-accuracy", "0", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["run_id"] != first["run_id"]
    assert {c["state"] for c in summary["components"].values()} == {"cached"}
    assert summary["pushed_model"] == first["pushed_model"]
    assert sorted(p.name for p in (data / "root" / "serving").iterdir()) == ["1"]


def test_a_run_id_in_use_an_empty_one_or_an_abbreviated_flag_is_refused_before_anything_runs(first_run, data):
    first = json.loads(first_run[1])
    summary = data / "root" / "runs" / first["run_id"] / "summary.json"
    before = summary.read_bytes()
    base = ("run", "--dataset", f"idx:{data / 'data'}", "--root", data / "root", *FAST, "--min-accuracy", "0")
    code, _, err = cli(*base, "--run-id", first["run_id"])
    assert code == 2
    assert_one_line_error(err, f"--run-id '{first['run_id']}': a run of this id already exists")
    assert summary.read_bytes() == before  # the first run's records are its own
    code, out, err = cli("runs", "show", first["run_id"], "--root", data / "root", "--json")
    assert json.loads(out)["status"] == "pushed" and len(json.loads(out)["executions"]) == 8
    code, _, err = cli(*base, "--run-id", "")
    assert code == 2
    assert_one_line_error(err, "--run-id '': expected up to 128 letters")
    code, _, err = cli(*base, "--epoch", "3")  # not taken as --epochs
    assert code == 2 and "unrecognized arguments: --epoch 3; did you mean --epochs?" in err
    # A required flag misspelled is named as the misspelling, not as the flag missing.
    for command in (("drift", "--curent", "x"), ("schema", "--datset", "x")):
        code, _, err = cli(*command)
        assert code == 2
        assert_one_line_error(err, f"unrecognized arguments: {command[1]}; did you mean {command[1][:3]}")


def test_not_blessed_exits_4_and_pushes_nothing(first_run, data):
    # A quarter of the test labels are wrong: 0.9 is out of reach, and 80 test images can judge it (36 needed).
    code, out, err = cli("run", "--dataset", f"idx:{data / 'data'}", "--root", data / "root", *FAST,
                         "--min-accuracy", "0.9", "--json")
    summary = json.loads(out)
    assert code == 4 and summary["status"] == "not_blessed" and summary["pushed_model"] is None
    assert summary["components"]["train"]["state"] == "cached"
    assert summary["components"]["evaluate"]["state"] == "executed" and "push" not in summary["components"]
    assert_one_line_error(err, "model not blessed", "< min_accuracy 0.9000")
    assert sorted(p.name for p in (data / "root" / "serving").iterdir()) == ["1"]
    code, out, err = cli("run", "--dataset", f"idx:{data / 'data'}", "--root", data / "root", *FAST,
                         "--min-accuracy", "0.9", "--to", "evaluate", "--json")
    assert code == 4 and json.loads(out)["status"] == "not_blessed", err  # not `partial` with exit 0
    assert_one_line_error(err, "model not blessed", "< min_accuracy 0.9000")


@pytest.mark.slow
def test_new_data_with_the_same_schema_reuses_the_search(first_run, data):
    first = json.loads(first_run[1])
    subsample = write_dataset(data / "subsample", {"train": 200}, seed=5)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (subsample / name).write_bytes((data / "data" / name).read_bytes())
    # --max-regression 1: this test is about reuse, not about beating the model serving now. --schema names
    # the schema the first run got by default, as a user does for a subsample of a curated dataset.
    args = ("run", "--dataset", f"idx:{subsample}", "--root", data / "root", *FAST, "--min-accuracy", "0",
            "--max-regression", "1", "--schema", REPO / "schemas" / "mnist_family.pbtxt", "--json")
    code, out, err = cli(*args)
    summary = json.loads(out)
    assert code == 0, err
    assert summary["dataset"]["fingerprint"] != first["dataset"]["fingerprint"]
    assert summary["tuning"]["reused"] and summary["components"]["tune"]["reused"]
    assert summary["tuning"]["best_hyperparameters"] == first["tuning"]["best_hyperparameters"]
    assert summary["components"]["train"]["state"] == "executed"
    assert summary["drift"] and not any(d["drifted"] for d in summary["drift"])  # same distribution

    code, out, err = cli(*args, "--retune", "--to", "tune")
    summary = json.loads(out)
    assert code == 0 and summary["components"]["tune"]["state"] == "executed", err
    assert not summary["tuning"]["reused"] and len(summary["tuning"]["trials"]) == 2


def test_new_span_that_drifted_blocks_with_exit_3(first_run, data):
    """A later delivery to the same root, with every image inverted, is compared with the last span."""
    drifted = inverted_copy(data / "data", data / "inverted")
    # --invert false: as delivered (auto would normalise the span back to the first one's polarity).
    code, out, err = cli("run", "--dataset", f"idx:{drifted}", "--root", data / "root", *FAST, "--invert", "false",
                         "--json")
    summary = json.loads(out)
    assert code == 3 and summary["status"] == "blocked" and summary["dataset"]["inverted"] is False
    breach = [d for d in summary["drift"] if d["drifted"]]
    assert breach and all(d["comparison"].startswith("drift") for d in breach)
    assert "mean_intensity" in {d["feature"] for d in breach}
    drift = next(a for a in summary["anomalies"] if a["type"] == "DRIFT" and a["feature"] == "mean_intensity")
    assert all(fragment in drift["description"] for fragment in ("G-test", "<= alpha", ">= minimum effect"))
    # The schema's polarity rule comes first: it names the cause and the fix.
    assert_one_line_error(err, "data validation failed", "feature 'background'", "images look inverted",
                          "--invert true")


def test_out_of_range_label_blocks_with_exit_3(tmp_path):
    data = write_dataset(tmp_path / "data", {"train": 60, "t10k": 20})
    labels = np.frombuffer(__import__("gzip").open(data / "train-labels-idx1-ubyte.gz").read()[8:], np.uint8).copy()
    labels[5] = 12
    write_idx(data / "train-labels-idx1-ubyte.gz", labels)
    code, out, err = cli("run", "--dataset", f"idx:{data}", "--root", tmp_path / "root", "--json")
    summary = json.loads(out)
    assert code == 3 and summary["status"] == "blocked" and summary["pushed_model"] is None
    assert any(a["feature"] == "label" and a["type"] == "INT_TYPE_BIG_INT" for a in summary["anomalies"])
    assert "tune" not in summary["components"]
    assert_one_line_error(err, "data validation failed", "feature 'label'")
    # A partial run carries the verdict of the gates it ran: `--to validate` is blocked too, not partial.
    code, out, err = cli("run", "--dataset", f"idx:{data}", "--root", tmp_path / "root", "--to", "validate", "--json")
    assert code == 3 and json.loads(out)["status"] == "blocked", err
    assert_one_line_error(err, "data validation failed", "feature 'label'")


def test_labels_all_of_one_class_block_with_exit_3(tmp_path):
    data = write_dataset(tmp_path / "data", {"train": 60, "t10k": 40})
    write_idx(data / "train-labels-idx1-ubyte.gz", np.full(60, 3, np.uint8))
    code, out, err = cli("run", "--dataset", f"idx:{data}", "--root", tmp_path / "root", "--min-accuracy", "0.95",
                         "--json")
    summary = json.loads(out)
    assert code == 3 and summary["status"] == "blocked" and "tune" not in summary["components"]
    found = {(a["split"], a["type"]) for a in summary["anomalies"]}
    assert ("train", "MISSING_CLASSES") in found  # and 40 test images cannot judge 0.95: 76 are needed
    assert ("test", "TEST_SPLIT_TOO_SMALL") in found and ("test", "MISSING_CLASSES") not in found
    assert_one_line_error(err, "data validation failed")


def test_truncated_gz_exits_1_naming_the_file(tmp_path):
    data = write_dataset(tmp_path / "data", {"train": 60, "t10k": 20})
    path = data / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    code, out, err = cli("run", "--dataset", f"idx:{data}", "--root", tmp_path / "root")
    assert code == 1
    assert_one_line_error(err, str(path), "not a readable gzip file")


def test_bad_config_and_usage(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  epoch: 3\n")
    code, _, err = cli("run", "--config", config, "--root", tmp_path / "root")
    assert code == 2
    assert_one_line_error(err, "bad.yaml", "unknown key 'train.epoch'")
    code, _, err = cli("run", "--max-trials", "many")
    assert code == 2 and "invalid int value" in err
    from test_config import BOMB

    config.write_text(BOMB)  # a "billion laughs": refused before it is expanded, in one line
    code, _, err = cli("run", "--config", config, "--root", tmp_path / "root")
    assert code == 2
    assert_one_line_error(err, "bad.yaml: expands to over 10000 values through its aliases")
    config.write_bytes(b"[" * 50_000 + b"]" * 50_000)  # deeper than the YAML parser's recursion goes
    code, _, err = cli("run", "--config", config, "--root", tmp_path / "root")
    assert code == 2
    assert_one_line_error(err, "bad.yaml: nested too deeply to read")
    config.write_bytes(b"root: caf\xe9\n")
    code, _, err = cli("run", "--config", config, "--root", tmp_path / "root")
    assert code == 2
    assert_one_line_error(err, "bad.yaml: not UTF-8 text")
    assert not (tmp_path / "root").exists()
    tiny = write_dataset(tmp_path / "tiny", {"train": 64, "t10k": 32})
    code, _, err = cli("run", "--schema", tmp_path / "none.pbtxt", "--dataset", f"idx:{tiny}", "--root", tmp_path)
    assert code == 1
    assert_one_line_error(err, "none.pbtxt: schema file not found")


@pytest.mark.parametrize("args, message", [
    (("--budget", "5"), "argument --budget: duration '5' has no unit: add s, m or h, e.g. 5m"),
    (("--tune-budget", "5"), "argument --tune-budget: duration '5' has no unit: add s, m or h, e.g. 5m"),
    (("--to", "training"), "--to training: unknown component; did you mean train?"),
    (("--from", "trainn"), "--from trainn: unknown component; did you mean train?"),
    (("--dataset", "{tmp}/idx"), "dataset spec '{tmp}/idx': a path needs its kind: idx:{tmp}/idx (a directory of IDX"),
    (("--dataset", "png:{tmp}/idx"), "dataset spec 'png:{tmp}/idx': expected NAME, tfds:NAME, idx:DIR"),
    (("--dataset", "idx:{tmp}/idx:test"), "a run ingests a whole dataset; drop ':test'"),
    (("--max-trial", "3"), "unrecognized arguments: --max-trial 3; did you mean --max-trials?"),
])
def test_a_usage_error_exits_2_in_one_line_and_records_no_run(tmp_path, args, message):
    write_dataset(tmp_path / "idx", {"train": 20, "t10k": 10})
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    dataset = [] if "--dataset" in args else ["--dataset", f"idx:{tmp_path / 'idx'}"]
    code, out, err = cli("run", "--root", tmp_path / "root", *dataset, *args)
    assert code == 2 and out == "", err
    assert_one_line_error(err, message.replace("{tmp}", str(tmp_path)))
    assert len(err.splitlines()) == 1 and not (tmp_path / "root").exists()  # no run record, no store


def test_a_root_that_is_a_file_or_cannot_be_written_is_refused_in_one_line(data, tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    dataset = ("--dataset", f"idx:{data / 'data'}")
    code, _, err = cli("run", *dataset, "--root", tmp_path / "a-file")
    assert code == 2
    assert_one_line_error(err, f"--root {tmp_path / 'a-file'}: a file, not a directory")
    code, _, err = cli("validate", *dataset, "--root", tmp_path / "a-file")
    assert code == 2 and "a file, not a directory" in err
    try:  # sysfs refuses new entries to anyone, root included: a read-only root on any Linux machine
        (Path("/sys") / "pipeline-probe").mkdir()
        (Path("/sys") / "pipeline-probe").rmdir()
        pytest.skip("/sys accepts new directories here")
    except OSError:
        pass
    for root in ("/sys", "/sys/pipeline_root"):
        code, _, err = cli("run", *dataset, "--root", root)
        assert code == 1
        assert_one_line_error(err, f"{root}: cannot write the pipeline root (")


def test_drift_command(data, tmp_path):
    inverted = inverted_copy(data / "data", tmp_path / "inverted")
    root = tmp_path / "root"
    code, out, err = cli("drift", "--baseline", f"idx:{data / 'data'}:train", "--current",
                         f"idx:{data / 'data'}:test", "--root", root, "--json")
    report = json.loads(out)
    assert code == 0 and not report["drifted"], err
    assert report["schema"].endswith("mnist_family.pbtxt") and report["counts"]["current"] == 80
    assert {d["feature"] for d in report["distances"]} >= {"label", "mean_intensity", "center_row"}

    saved = next(root.glob("artifacts/statistics/*/train/FeatureStats.pb"))
    code, out, err = cli("drift", "--baseline", saved, "--current", f"idx:{inverted}:test", "--root", root)
    assert code == 3, err
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert rows["mean_intensity"].endswith("  DRIFTED")
    # 80 labels cannot show a class's share within 0.03 of 320's: too little data is its own verdict, not ok
    assert rows["label"].endswith("  too few images: no batch the check takes decides")
    # A run's statistics are of its data after `data.invert`: a cron job checking a dark-on-light source
    # against them turns today's batch around the same way, and finds it unchanged.
    code, out, err = cli("drift", "--baseline", saved, "--current", f"idx:{inverted}:test", "--root", root,
                         "--invert", "auto", "--json")
    assert code == 0 and not json.loads(out)["drifted"], err

    code, out, err = cli("drift", "--baseline", "/no/such/stats.pb", "--current", saved, "--root", root)
    assert code == 1
    assert_one_line_error(err, "/no/such/stats.pb")


def test_drift_reads_a_batch_whole_with_or_without_labels(data, tmp_path):
    today = tmp_path / "today"  # a day's file: only test (t10k) files
    today.mkdir()
    for path in (data / "data").glob("t10k-*"):
        shutil.copy(path, today / path.name)
    root, baseline = tmp_path / "root", f"idx:{data / 'data'}:train"
    code, out, err = cli("drift", "--baseline", baseline, "--current", f"idx:{today}", "--root", root, "--json")
    report = json.loads(out)
    assert code == 0 and not report["drifted"], err
    assert report["counts"]["current"] == 80 and "label" not in report  # every image, labels compared
    code, _, err = cli("schema", "--dataset", f"idx:{today}", "--root", root)
    assert code == 1
    assert_one_line_error(err, f"idx:{today}: no training examples to draft a schema from")

    (today / "t10k-labels-idx1-ubyte.gz").unlink()  # serving traffic: images only
    images = read_idx(today / "t10k-images-idx3-ubyte.gz").copy()
    images[:20] = 0  # a quarter of the batch blanked
    write_idx(today / "t10k-images-idx3-ubyte.gz", images)
    page = tmp_path / "drift.html"
    code, out, err = cli("drift", "--baseline", baseline, "--current", f"idx:{today}:test", "--root", root,
                         "--report", page)
    assert code == 3, err
    moved = page.read_text().split('id="moved"')[1].split("</section>")[0]  # where the mass went, with images
    row = next(r for r in moved.split("<tr>") if r.startswith("<th>mean_intensity"))
    assert "[0, 9.107)" in row and row.count("<img") == 8
    assert out.splitlines()[0] == "label: not compared: the current data have no labels"
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert rows["mean_intensity"][-1] == "DRIFTED" and "label" not in rows
    assert float(rows["mean_intensity"][2]) <= float(rows["mean_intensity"][3])  # p-value within its alpha

    code, out, err = cli("drift", "--baseline", f"idx:{data / 'data'}:all", "--current", f"idx:{data / 'data'}:all",
                         "--root", root, "--json")
    report = json.loads(out)
    assert code == 0 and report["counts"] == {"baseline": 400, "current": 400}, err
    assert all(d["p_value"] == pytest.approx(1) for d in report["distances"])


def test_drift_on_too_few_images_says_so_and_the_size_that_would_decide(data, tmp_path):
    """20 images are neither drift nor shown free of it: the verdict says so, with the batch size that
    would decide, in the table, the summary line, the JSON and the report; 0 images is an error naming them."""
    baseline = tmp_path / "baseline"
    write_dataset(baseline, {"train": 4000}, seed=5)
    today = write_dataset(tmp_path / "today", {"t10k": 20}, seed=6)
    root, page = tmp_path / "root", tmp_path / "drift.html"
    code, out, err = cli("drift", "--baseline", f"idx:{baseline}", "--current", f"idx:{today}", "--root", root,
                         "--report", page)
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert re.search(r"  too few images: about [\d,]+ would decide$", rows["label"]), out
    last = out.splitlines()[-1]
    assert last.startswith("insufficient data: too few current images to tell drift from noise; about "), out
    needed = int(last.split("about ")[1].split()[0].replace(",", ""))
    assert 20 < needed and "Insufficient data: too few current images" in page.read_text()
    code, out, err = cli("drift", "--baseline", f"idx:{baseline}", "--current", f"idx:{today}", "--root", root,
                         "--json")
    report = json.loads(out)
    assert report["verdict"] == "insufficient data" and report["needed"] == needed and not report["drifted"]
    assert {d["verdict"] for d in report["distances"]} == {"insufficient data"}

    # Minimums 20 times the curated ones: 4,000 images against themselves show every effect within them.
    schema = tmp_path / "coarse.pbtxt"
    schema.write_text((REPO / "schemas" / "mnist_family.pbtxt").read_text()
                      .replace("threshold: 0.0005 ", "threshold: 0.01 ").replace("threshold: 0.03 ", "threshold: 0.1 "))
    code, out, err = cli("drift", "--baseline", f"idx:{baseline}", "--current", f"idx:{baseline}", "--root", root,
                         "--schema", schema, "--json")
    report = json.loads(out)
    assert code == 0 and report["verdict"] == "ok" and report["needed"] is None, out
    assert {d["verdict"] for d in report["distances"]} == {"ok"}

    empty = tmp_path / "empty.csv"
    empty.write_text("label," + ",".join(f"pixel{i}" for i in range(784)) + "\n")
    code, out, err = cli("drift", "--baseline", f"idx:{baseline}", "--current", f"csv:{empty}", "--root", root)
    assert code == 1
    assert_one_line_error(err, f"csv:{empty}: no images to compare (0 examples)")


def test_drift_with_the_model_view(first_run, data, tmp_path):
    today = write_dataset(tmp_path / "today", {"t10k": 80}, seed=3)  # new images from the same source
    root, serving = data / "root", data / "root" / "serving"
    baseline = f"idx:{data / 'data'}:test"  # images the model did not train on
    code, out, err = cli("drift", "--baseline", baseline, "--current", f"idx:{today}", "--serving-dir", serving,
                         "--root", root, "--json")
    assert code == 0, err
    views = {d["feature"]: d for d in json.loads(out)["distances"] if d["comparison"].startswith("model")}
    assert set(views) == {"class_mix", "confidence", "embedding"}  # the labelled baseline gives the confusion
    assert not any(d["drifted"] for d in views.values()), views
    assert views["embedding"]["test"] == "MMD" and str(serving / "1") in views["embedding"]["comparison"]

    images = read_idx(today / "t10k-images-idx3-ubyte.gz")  # bars in columns: another meaning, same pixels
    write_idx(today / "t10k-images-idx3-ubyte.gz", np.ascontiguousarray(np.transpose(images, (0, 2, 1))))
    code, out, err = cli("drift", "--baseline", baseline, "--current", f"idx:{today}", "--model", serving / "1",
                         "--root", root, "--json", "--report", tmp_path / "model.html")
    assert code == 3, err
    assert "<td>embedding</td><td>MMD</td>" in (tmp_path / "model.html").read_text()
    drifted = {d["feature"] for d in json.loads(out)["distances"] if d["drifted"]}
    assert "embedding" in drifted, out

    code, _, err = cli("drift", "--baseline", baseline, "--current", f"idx:{today}", "--model", tmp_path,
                       "--root", root)
    assert code == 1
    assert_one_line_error(err, f"{tmp_path}: not a pushed model version (no model.keras)")


def test_a_pushed_version_carries_its_own_drift_baseline(first_run, data, tmp_path):
    """`drift --serving-dir` without `--baseline`: the version's run's data at push is the baseline of the
    summary features (every split's images) and of the model's view (the classes' mix estimated through its
    confusion on the held-out images)."""
    from components.drift import fixed_histogram
    from components.drift_baseline import load
    from components.libs import load_tfdv

    root, serving = data / "root", data / "root" / "serving"
    stored = load(serving / "1")
    assert stored.count == 400 and len(stored.labels) == stored.probabilities.shape[0] >= 80  # eval and test
    run_stats = [load_tfdv().load_stats_binary(str(path)).datasets[0]
                 for path in root.glob("artifacts/statistics/*/*/FeatureStats.pb")]
    for feature in ("mean_intensity", "label"):  # what the run's own statistics counted, split by split
        assert stored.histograms[feature].tolist() == sum(fixed_histogram(s, feature) for s in run_stats).tolist()
    today = write_dataset(tmp_path / "today", {"t10k": 80}, seed=3)
    (today / "t10k-labels-idx1-ubyte.gz").unlink()  # serving traffic: no labels
    code, out, err = cli("drift", "--current", f"idx:{today}", "--serving-dir", serving, "--root", root, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["baseline"] == f"{serving / '1'} (its run's data at push)" and report["counts"]["baseline"] == 400
    tests = {(d["comparison"].split(":")[0], d["feature"]): d for d in report["distances"]}
    assert {("drift", "mean_intensity"), ("drift", "center_row")} <= tests.keys() and ("drift", "label") not in tests
    assert tests[f"model {serving / '1'}", "class_mix"]["test"] == "BBSE z-test"
    assert not report["drifted"] and report["verdict"] == "insufficient data", out  # 80 images decide nothing
    images = read_idx(today / "t10k-images-idx3-ubyte.gz")
    write_idx(today / "t10k-images-idx3-ubyte.gz", np.ascontiguousarray(np.transpose(images, (0, 2, 1))))
    code, out, err = cli("drift", "--current", f"idx:{today}", "--serving-dir", serving, "--root", root, "--json")
    assert code == 3 and "embedding" in {d["feature"] for d in json.loads(out)["distances"] if d["drifted"]}, out

    old = tmp_path / "old"  # a version pushed before versions carried a baseline
    shutil.copytree(serving / "1", old)
    (old / "drift_baseline.npz").unlink()
    code, _, err = cli("drift", "--current", f"idx:{today}", "--model", old, "--root", root)
    assert code == 1
    assert_one_line_error(err, f"{old}: holds no drift baseline (drift_baseline.npz: pushed before versions carried "
                               "one); pass --baseline SPEC")
    (old / "drift_baseline.npz").write_bytes((serving / "1" / "drift_baseline.npz").read_bytes()[:300])
    code, _, err = cli("drift", "--current", f"idx:{today}", "--model", old, "--root", root)
    assert code == 1
    assert_one_line_error(err, f"{old / 'drift_baseline.npz'}: not a drift baseline (")
    np.savez(old / "drift_baseline.npz", probabilities=stored.probabilities, embeddings=stored.embeddings,
             labels=stored.labels, histogram_mean_intensity=np.ones(5))  # a whole file of other buckets
    code, _, err = cli("drift", "--current", f"idx:{today}", "--model", old, "--root", root)
    assert code == 1
    assert_one_line_error(err, f"{old / 'drift_baseline.npz'}: not a drift baseline (probabilities")
    code, _, err = cli("drift", "--current", f"idx:{today}", "--serving-dir", serving, "--root", root,
                       "--invert", "auto")
    assert code == 2
    assert_one_line_error(err, "--invert auto: a version's own drift baseline is of images as delivered")
    code, _, err = cli("drift", "--current", f"idx:{today}", "--root", root)
    assert code == 2
    assert_one_line_error(err, "drift: --baseline SPEC is needed, unless --model or --serving-dir names a pushed "
                               "version")


def test_validate_command(data, tmp_path):
    code, out, err = cli("validate", "--dataset", f"idx:{data / 'data'}", "--root", tmp_path / "root", "--json")
    report = json.loads(out)
    assert code == 0 and report["clean"] and report["anomalies"] == [], err
    assert report["counts"]["test"] == 80 and report["schema"].endswith("mnist_family.pbtxt")
    assert report["distances"] and not any(d["drifted"] for d in report["distances"])

    bad = write_dataset(tmp_path / "bad", {"train": 60}, side=32)
    write_idx(bad / "t10k-images-idx3-ubyte.gz", np.zeros((0, 32, 32), np.uint8))
    write_idx(bad / "t10k-labels-idx1-ubyte.gz", np.zeros(0, np.uint8))
    labels = np.arange(60, dtype=np.uint8) % 10
    labels[3] = 12
    write_idx(bad / "train-labels-idx1-ubyte.gz", labels)
    code, out, err = cli("validate", "--dataset", f"idx:{bad}", "--root", tmp_path / "root")
    assert code == 3, err
    assert "anomalies" in out.splitlines()[0]
    found = {(line.split()[0], line.split()[1], line.split()[2].rstrip(":")) for line in out.splitlines()[1:]}
    assert ("train", "label", "INT_TYPE_BIG_INT") in found
    assert ("train", "image", "INVALID_FEATURE_SHAPE") in found
    assert ("test", "*", "EMPTY_SPLIT") in found


def test_schema_command_writes_a_draft_for_review(data, tmp_path):
    output = tmp_path / "draft.pbtxt"
    code, out, err = cli("schema", "--dataset", f"idx:{data / 'data'}", "--root", tmp_path / "root",
                         "--output", output)
    assert code == 0, err
    from components.schema import load_schema

    features = {f.name: f for f in load_schema(output).feature}
    assert features["label"].int_domain.max == 9 and features["label"].drift_comparator.infinity_norm.threshold
    assert 0 < features["mean_intensity"].float_domain.min < features["mean_intensity"].float_domain.max < 255
    # a signed feature keeps its margin below its smallest (negative) value: the drafted range holds the data
    assert features["mass_offset_col"].float_domain.min < -0.3
    # The minimum effects are measured between the data's train and test splits, and the file says so.
    comment = " ".join(line[2:] for line in output.read_text().splitlines() if line.startswith("#"))
    assert comment.startswith("Minimum effects, measured: the 99% upper bound of each feature's effect between "
                              f"idx:{data / 'data'} train (")
    listed = dict(pair.split() for pair in comment.rsplit(": ", 1)[1].rstrip(".").split(", "))
    assert listed.keys() >= {"label", "mean_intensity", "background"}
    for name, value in listed.items():
        comparator = features[name].drift_comparator
        threshold = (comparator.infinity_norm if name == "label" else comparator.jensen_shannon_divergence).threshold
        assert threshold == pytest.approx(float(value)) and threshold >= (0.005 if name == "label" else 0.0001)
    # 80 test images against 320 leave a wide bound: far above the curated Fashion-MNIST minimums.
    assert float(listed["label"]) > 0.1

    # A single split is carved into train and test; a carve that leaves test empty (these four images all
    # hash into train) keeps the defaults.
    train_only = write_dataset(tmp_path / "train-only", {"train": 4}, seed=2)
    code, out, err = cli("schema", "--dataset", f"idx:{train_only}", "--root", tmp_path / "root")
    assert code == 0 and out.startswith("# Minimum effects: the defaults; the data has no test split"), err


@pytest.mark.parametrize("args, message", [
    (("--max-trials", "-5"), "config 'tune.max_trials': expected an integer at least 1 and at most 10000, got -5"),
    (("--config", "{bad}"), "bad.yaml: config 'data.eval_fraction': expected a number more than 0 and less than 1, "
                            "got 1.5"),
])
def test_a_bad_value_is_refused_in_one_line_before_anything_runs(tmp_path, args, message):
    (tmp_path / "bad.yaml").write_text("data:\n  eval_fraction: 1.5\n")
    code, out, err = cli("run", "--root", tmp_path / "root", *[a.format(bad=tmp_path / "bad.yaml") for a in args])
    assert code == 2 and out == ""
    assert_one_line_error(err, message)
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("command", [["mnist-pipeline"], [sys.executable, "-m", "pipeline"]])
def test_the_command_names_itself_as_invoked_and_has_a_version(command):
    from importlib import metadata

    name = "mnist-pipeline" if command == ["mnist-pipeline"] else "python -m pipeline"
    if command == ["mnist-pipeline"]:
        command = [str(Path(sys.executable).with_name("mnist-pipeline"))]  # the installed entry point
    run = lambda *args: subprocess.run([*command, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    version = run("--version")
    assert version.returncode == 0 and version.stdout == f"{name} {metadata.version('mnist-family-pipeline')}\n"
    helped = run("run", "--help")
    assert helped.returncode == 0 and helped.stdout.startswith(f"usage: {name} run ")
    assert "one of ingest, statistics, schema, validate, tune, train, evaluate, push" in " ".join(helped.stdout.split())


def test_every_flag_of_every_command_has_help_with_its_default():
    from pipeline.parser import build as _parser

    commands = _parser()._subparsers._group_actions[0].choices
    parsers = [p for p in commands.values() if not p._subparsers] + [
        sub for p in commands.values() if p._subparsers for sub in p._subparsers._group_actions[0].choices.values()]
    missing = [f"{p.prog} {a.option_strings[0]}" for p in parsers for a in p._actions
               if a.option_strings and a.dest != "help" and not a.required and "default" not in (a.help or "")]
    assert missing == []


def _broken_inputs(tmp: Path) -> None:
    """The bad inputs of the catalogue below, each in its own directory under `tmp`."""
    (tmp / "empty").mkdir()
    magic = write_dataset(tmp / "magic", {"train": 20, "t10k": 10})
    (magic / "train-images-idx3-ubyte.gz").write_bytes(__import__("gzip").compress(b"\x00\x00\x07\x03" + bytes(60)))
    truncated = write_dataset(tmp / "truncated", {"train": 20, "t10k": 10})
    path = truncated / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    counts = write_dataset(tmp / "counts", {"train": 20, "t10k": 10})
    write_idx(counts / "t10k-labels-idx1-ubyte.gz", np.zeros(9, np.uint8))
    (tmp / "png" / "a").mkdir(parents=True)
    (tmp / "png" / "a" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp / "bad.csv").write_text("label," + ",".join(f"pixel{i}" for i in range(784)) + "\n"
                                 + "1," + ",".join(["0"] * 783) + ",x\n")
    (tmp / "bad.yaml").write_text("data:\n  eval_fraction: 1.5\n")


def _tree(directory: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()} if directory.is_dir() else {}


@pytest.mark.parametrize("args, code, fragments", [
    (("--dataset", "idx:{tmp}/nothing"), 1, ("nothing: no such directory",)),
    (("--dataset", "idx:{tmp}/empty"), 1, ("empty: no IDX files",)),
    (("--dataset", "idx:{tmp}/magic"), 1, ("train-images-idx3-ubyte.gz: wrong magic number 00000703",)),
    (("--dataset", "idx:{tmp}/truncated"), 1, ("t10k-images-idx3-ubyte.gz", "not a readable gzip file")),
    (("--dataset", "idx:{tmp}/counts"), 1, ("t10k-images-idx3-ubyte.gz: 10 images but", "has 9 labels")),
    (("--dataset", "folder:{tmp}/png"), 1, ("bad.png: not a readable PNG or JPEG image",)),
    (("--dataset", "csv:{tmp}/bad.csv"), 1, ("bad.csv: line 2: column pixel783 is 'x'",)),
    (("--dataset", "ftp:x"), 2, ("dataset spec 'ftp:x'",)),
    (("--max-trials", "-5"), 2, ("config 'tune.max_trials'", "got -5")),
    (("--config", "{tmp}/bad.yaml"), 2, ("bad.yaml: config 'data.eval_fraction'", "got 1.5")),
    (("--from", "nothing"), 2, ("nothing",)),
    (("--schema", "{tmp}/none.pbtxt"), 1, ("none.pbtxt: schema file not found",)),
])
def test_bad_input_catalogue(first_run, data, tmp_path, args, code, fragments):
    """Each bad input: its exit code, one line naming what is wrong, no traceback, and the root's artifacts
    and serving directory exactly as they were (a failed run is recorded, nothing else changes)."""
    _broken_inputs(tmp_path)
    root = data / "root"
    before = {name: _tree(root / name) for name in ("artifacts", "serving")}
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--dataset" not in args:
        args += ["--dataset", f"idx:{data / 'data'}"]
    got, out, err = cli("run", "--root", root, *FAST, "--min-accuracy", "0", *args)
    assert got == code, err
    assert_one_line_error(err, *fragments)
    assert {name: _tree(root / name) for name in ("artifacts", "serving")} == before
