"""End-to-end tests of run records: ML Metadata, caching and partial runs, `runs` commands, the run report."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_dataset
from pipeline import config
from engine.lock import root_lock
from engine.metadata import Metadata
from test_cli import REPO, assert_one_line_error, cli
from test_report import rendered

BUILD = ["--no-tune", "--epochs", "1", "--min-accuracy", "0", "--max-regression", "1", "--min-slice-size", "8",
         "--max-slice-regression", "1", "--json"]
SECTIONS = ("dataset", "validation", "tuning", "training", "evaluation", "blessing", "components", "lineage")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    write_dataset(base / "data", {"train": 320, "t10k": 80}, seed=3)
    return base


def run(root: Path, *extra, dataset="data"):
    code, out, err = cli("run", "--dataset", f"idx:{root / dataset}", "--root", root / "root", *BUILD, *extra)
    assert out, err
    return code, json.loads(out), err


def states(summary) -> dict[str, str]:
    return {name: c["state"] for name, c in summary["components"].items()}


def files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def _first_once(root):
    code, summary, err = run(root)
    assert code == 0 and summary["status"] == "pushed", err
    shutil.copytree(root / "root", root / "root.after-first-run", symlinks=True)
    return summary


@pytest.fixture
def first(_first_once, root):
    """The first run's summary, its root just as that run left it, whatever tests ran before."""
    shutil.rmtree(root / "root")
    shutil.copytree(root / "root.after-first-run", root / "root", symlinks=True)
    return _first_once


def test_run_is_recorded_with_its_config_and_shown(first, root):
    run_dir = root / "root" / "runs" / first["run_id"]
    saved = config.load(run_dir / "config.yaml")  # the effective config, loadable with --config
    assert saved.train.epochs == 1 and not saved.tune.enabled
    assert json.loads(json.dumps(config.to_dict(saved))) == first["config"]

    code, out, err = cli("runs", "list", "--root", root / "root", "--json")
    assert code == 0, err
    [listed] = json.loads(out)
    assert listed["run_id"] == first["run_id"] and listed["status"] == "pushed" and listed["pushed_version"] == 1
    assert listed["accuracy"] == pytest.approx(first["evaluation"]["accuracy"])

    code, out, err = cli("runs", "show", first["run_id"], "--root", root / "root", "--json")
    shown = json.loads(out)
    assert code == 0 and "epochs: 1" in shown["config"] and shown["report"] == first["report"]
    assert [(e["component"], e["state"]) for e in shown["executions"]] == [(n, "executed") for n in first["components"]]
    by_component = {e["component"]: e["output"] for e in shown["executions"]}
    assert by_component["ingest"]["properties"]["fingerprint"] == first["dataset"]["fingerprint"]
    assert by_component["evaluate"]["properties"]["blessed"] is True
    assert by_component["push"]["properties"]["version"] == 1
    code, out, err = cli("runs", "show", first["run_id"], "--root", root / "root")
    assert code == 0 and "push       executed" in out and "config:" in out


def test_lineage_names_the_data_and_hyperparameters_of_a_pushed_version(first, root):
    code, out, err = cli("runs", "lineage", "1", "--root", root / "root", "--json")
    assert code == 0, err
    lineage = json.loads(out)
    assert lineage["run_id"] == first["run_id"] and lineage["uri"] == first["push"]["uri"]
    assert lineage["examples"]["properties"]["fingerprint"] == first["dataset"]["fingerprint"]
    assert lineage["examples"]["properties"]["span"] == 1
    assert lineage["hyperparameters"]["properties"]["values"] == first["tuning"]["best_hyperparameters"]
    assert lineage["schema"]["uri"] == first["schema"]["uri"].rsplit("/", 1)[0]
    assert lineage["statistics"]["uri"] == first["components"]["statistics"]["uri"]
    code, out, err = cli("runs", "lineage", "1", "--root", root / "root", "--serving-dir", root / "root" / "serving")
    assert code == 0 and f"pushed by run {first['run_id']}" in out and "data fingerprint" in out
    relative = os.path.relpath(root / "root", REPO)  # the CLI runs in REPO: a relative spelling of the same root
    code, out, err = cli("runs", "lineage", "1", "--root", relative, "--json")
    assert code == 0 and json.loads(out)["run_id"] == first["run_id"], err


def test_report_shows_every_section_in_headless_chromium(first, root, tmp_path):
    page = Path(first["report"])
    seen = rendered(page, SECTIONS, {"samples": "#dataset img", "curves": "#training polyline",
                                     "confusion": "#evaluation table.confusion td", "lineage_rows": "#lineage tr",
                                     "slice_rows": "#evaluation h3 + table tr", "worst": "#evaluation td.samples img",
                                     "reliability": "#evaluation svg.reliability rect",
                                     "confidence": "#evaluation figure svg rect"},
                    tmp_path)
    assert all(seen[section] for section in SECTIONS), seen
    assert seen["samples"] >= 10 and seen["broken_images"] == 0  # sample images of every class, decoded
    assert seen["curves"] == 4 and seen["confusion"] == 100 and seen["lineage_rows"] >= 6
    # the slice table (a row per slice of at least 8 of the 80 test images), the worst slices' misclassified
    # images, the reliability diagram's frame and bars, and the confidence histograms
    measured = [s for s in first["evaluation"]["slices"] if not s.get("too_small")]
    assert len(measured) >= 10 and seen["slice_rows"] >= len(measured) + 1, seen
    assert seen["reliability"] >= 2 and seen["confidence"] >= 20, seen
    assert seen["worst"] == sum(len(s["wrong"]) for s in sorted(
        (s for s in measured if s["wrong"]), key=lambda s: s["accuracy"])[:3]), seen
    assert "Blessed." in page.read_text() and first["dataset"]["fingerprint"][:16] in page.read_text()


def test_same_command_again_is_fully_cached_and_adds_only_the_run_record(first, root):
    before = files(root / "root" / "artifacts") | files(root / "root" / "serving")
    artifacts_before = len(Metadata.open(config.override(config.Config(), root=str(root / "root"))).live_artifacts())
    code, summary, err = run(root)
    assert code == 0 and set(states(summary).values()) == {"cached"}, err
    assert files(root / "root" / "artifacts") | files(root / "root" / "serving") == before
    store = Metadata.open(config.override(config.Config(), root=str(root / "root")))
    assert len(store.live_artifacts()) == artifacts_before == len(store.mlmd.get_artifacts())
    assert [e["state"] for e in store.run(summary["run_id"])["executions"]] == ["cached"] * 8
    assert "ingest     cached" in err  # one line per component: name, state, elapsed


def test_a_training_flag_reruns_train_evaluate_push_only(first, root, tmp_path):
    code, summary, err = run(root, "--epochs", "2")
    assert code == 0, err
    assert states(summary) == {"ingest": "cached", "statistics": "cached", "schema": "cached", "validate": "cached",
                               "tune": "cached", "train": "executed", "evaluate": "executed", "push": "executed"}
    assert summary["push"]["version"] == 2
    lineage = json.loads(cli("runs", "lineage", "2", "--root", root / "root", "--json")[1])
    assert lineage["baseline"]["properties"]["version"] == 1 and lineage["run_id"] == summary["run_id"]
    code, out, err = cli("runs", "lineage", "2", "--root", root / "root")
    assert code == 0 and f"baseline         version 1 ({root / 'root' / 'serving' / '1'})" in out, err
    code, out, err = cli("runs", "lineage", "1", "--root", root / "root", "--json")  # still known after serving as one
    assert code == 0 and json.loads(out)["run_id"] == first["run_id"], err
    # runs compare: two pushed versions (or runs), paired on the same test images
    code, out, err = cli("runs", "compare", "1", "2", "--root", root / "root", "--html", tmp_path / "compare.html")
    assert code == 0 and out.startswith("version 2 against version 1: accuracy change with its 95% interval, paired "
                                        "on the same test images"), err
    overall = next(line for line in out.splitlines() if line.startswith("overall"))
    accuracies = (first["evaluation"]["accuracy"], summary["evaluation"]["accuracy"])
    assert f"{accuracies[0]:.4f} {accuracies[1]:.4f} {accuracies[1] - accuracies[0]:+.4f} [" in " ".join(overall.split())
    assert "<table>" in (tmp_path / "compare.html").read_text() and "version 2 against version 1" in (
        tmp_path / "compare.html").read_text()
    code, out, err = cli("runs", "compare", first["run_id"], summary["run_id"], "--root", root / "root", "--json")
    compared = json.loads(out)
    assert code == 0 and compared["paired"] and compared["rows"][0]["slice"] == "overall", err
    assert compared["rows"][0]["change"] == pytest.approx(accuracies[1] - accuracies[0], abs=1e-4)
    assert compared["rows"][0]["low"] <= compared["rows"][0]["change"] <= compared["rows"][0]["high"]
    code, out, err = cli("runs", "compare", "1", "9", "--root", root / "root")
    assert_one_line_error(err, "no pushed model recorded at this directory")
    assert code == 1


def test_partial_runs_stop_or_start_where_asked(first, root, tmp_path):
    code, summary, err = run(root, "--to", "validate")
    assert code == 0 and summary["status"] == "partial", err
    assert list(summary["components"]) == ["ingest", "statistics", "schema", "validate"]
    code, summary, err = run(root, "--from", "evaluate")
    assert code == 0 and states(summary)["train"] == "cached" and states(summary)["evaluate"] == "executed"

    code, out, err = cli("run", "--dataset", f"idx:{root / 'data'}", "--root", tmp_path / "fresh", "--from", "train",
                         *BUILD)
    assert code == 1
    assert_one_line_error(err, "--from train: ingest comes before it and has no cached output", "never run")
    code, out, err = cli("run", "--root", tmp_path / "fresh", "--to", "deploy")
    assert code == 2 and "--to deploy: unknown component" in err


def test_tampered_outputs_are_detected_and_rebuilt(first, root):
    store = root / "root" / "artifacts"
    shard = next((store / "ingest").glob("*/train/data-*.tfrecord.gz"))
    shard.write_bytes(shard.read_bytes()[:1000])
    schema = next((store / "schema").glob("*/schema.pbtxt"))
    schema.write_text(schema.read_text().replace("max: 255", "max: 254"))
    shutil.rmtree(Path(first["components"]["train"]["uri"]))
    code, summary, err = run(root)  # the first run's command: only what was tampered with differs
    assert code == 0, err
    components = summary["components"]
    assert "train/" in components["ingest"]["rebuilt"] and "bytes" in components["ingest"]["rebuilt"]
    assert "schema.pbtxt was changed" in components["schema"]["rebuilt"]
    assert components["train"]["uri"] == first["components"]["train"]["uri"]
    assert components["train"]["state"] == "executed"
    # The retrained model is other bytes: what was computed from the deleted one runs again and pushes anew.
    assert components["evaluate"]["state"] == components["push"]["state"] == "executed"
    assert summary["push"]["version"] > first["push"]["version"]
    assert states(summary)["statistics"] == "cached" and "max: 255" in schema.read_text()
    live = Metadata.open(config.override(config.Config(), root=str(root / "root"))).live_artifacts()
    assert all(Path(a["uri"]).exists() for a in live)


def test_new_data_reruns_everything(first, root):
    write_dataset(root / "other", {"train": 320, "t10k": 80}, seed=4)
    code, summary, err = run(root, dataset="other")
    assert code == 0, err
    assert set(states(summary).values()) == {"executed"}
    lineage = json.loads(cli("runs", "lineage", str(summary["push"]["version"]), "--root", root / "root",
                             "--json")[1])
    assert lineage["examples"]["properties"]["fingerprint"] == summary["dataset"]["fingerprint"]


def test_two_runs_on_one_root_wait_or_fail_clearly(first, root, tmp_path):
    with root_lock(root / "root", "20260101T000000-held"):
        code, out, err = cli("run", "--dataset", f"idx:{root / 'data'}", "--root", root / "root", *BUILD, "--no-wait")
        assert code == 1 and not out
        assert_one_line_error(err, "run 20260101T000000-held (pid", "is running on this root")
        log = tmp_path / "waiting.log"
        with open(log, "w") as stderr:
            waiting = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--dataset", f"idx:{root / 'data'}",
                                        "--root", str(root / "root"), *BUILD], cwd=REPO, stdout=subprocess.PIPE,
                                       stderr=stderr, text=True)
            deadline = time.monotonic() + 600  # a bound against a hang, not a speed assumption
            while "waiting for" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert "waiting for run 20260101T000000-held" in log.read_text()
            assert waiting.poll() is None  # still waiting: nothing of it has run
    out, _ = waiting.communicate(timeout=600)
    assert waiting.returncode == 0 and json.loads(out)["status"] == "pushed", log.read_text()


def test_a_corrupted_metadata_store_stops_the_run_before_anything_runs(root, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.sqlite").write_bytes(b"\x00garbage" * 512)
    code, out, err = cli("run", "--dataset", f"idx:{root / 'data'}", "--root", broken, *BUILD)
    assert code == 1
    assert_one_line_error(err, f"{broken / 'metadata.sqlite'}: cannot open the metadata store", "move it aside")
    assert not (broken / "artifacts").exists() and not (broken / "runs").exists()


def test_runs_commands_read_the_store_a_config_file_names_and_show_accuracy_and_errors(first, root, tmp_path):
    (tmp_path / "store").mkdir()
    for path in (root / "root").glob("metadata.sqlite*"):  # a store set by metadata.sqlite, away from the root
        path.rename(tmp_path / "store" / path.name)
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"root: {root / 'root'}\nmetadata: {{sqlite: {tmp_path / 'store' / 'metadata.sqlite'}}}\n")
    code, out, err = cli("runs", "list", "--root", root / "root")
    assert code == 1 and "no metadata store" in err
    code, out, err = cli("runs", "list", "--config", settings, "--json")
    assert code == 0 and [r["run_id"] for r in json.loads(out)] == [first["run_id"]], err
    code, out, err = cli("runs", "show", first["run_id"], "--config", settings, "--json")
    assert code == 0 and json.loads(out)["accuracy"] == pytest.approx(first["evaluation"]["accuracy"]), err
    assert json.loads(out)["pushed_version"] == 1 and json.loads(out)["executions"]  # as before, and more
    code, out, err = cli("runs", "show", first["run_id"], "--config", settings)
    assert code == 0 and f"test accuracy {first['evaluation']['accuracy']:.4f}, pushed version 1" in out, err
    code, out, err = cli("runs", "lineage", "1", "--config", settings)
    assert code == 0 and f"pushed by run {first['run_id']}" in out and "baseline" not in out, err

    code, _, err = cli("run", "--dataset", f"idx:{root / 'data'}", "--root", tmp_path / "fresh", "--from", "train")
    assert code == 1  # recorded failed: its error ends its row
    code, out, err = cli("runs", "list", "--root", tmp_path / "fresh")
    [row] = out.splitlines()[1:]
    assert code == 0 and " failed " in row and "  error: --from train: ingest comes before it" in row, out


@pytest.mark.parametrize("args, message", [
    (("runs", "list"), "no metadata store: no run was recorded under this root"),
    (("runs", "show", "20260101T000000-abcd"), None),
    (("runs", "lineage", "7"), None),
])
def test_runs_commands_bad_inputs(first, root, tmp_path, args, message):
    where = tmp_path / "empty" if message else root / "root"
    code, out, err = cli(*args, "--root", where)
    expected = message or ("no run '20260101T000000-abcd'" if args[1] == "show" else "serving/7: no pushed model")
    assert code == 1
    assert_one_line_error(err, expected)


@pytest.mark.slow
def test_a_root_keeps_its_schema_for_new_spans_and_reuses_its_search(tmp_path):
    generic = Path(__file__).resolve().parent.parent / "schemas" / "mnist_family.pbtxt"
    custom = tmp_path / "custom.pbtxt"  # a given schema whose content differs from the generic one
    custom.write_text(generic.read_text().replace("threshold: 0.03 }", "threshold: 0.031 }"))
    assert custom.read_text() != generic.read_text()
    first, second = (write_dataset(tmp_path / name, {"train": 240, "t10k": 60}, seed=seed)
                     for name, seed in (("span1", 5), ("span2", 6)))
    search = ["--max-trials", "1", "--max-epochs", "1", "--to", "tune", "--json"]  # training is not the question
    code, out, err = cli("run", "--dataset", f"idx:{first}", "--root", tmp_path / "root", "--schema", custom, *search)
    assert code == 0, err
    assert json.loads(out)["schema"]["source"] == f"curated:{custom}"
    code, out, err = cli("run", "--dataset", f"idx:{second}", "--root", tmp_path / "root", *search)
    summary = json.loads(out)
    assert code == 0, err
    assert summary["schema"]["source"] == f"curated:{custom} (kept from this root's earlier runs)"
    assert summary["tuning"]["reused"] is True and summary["components"]["tune"]["state"] == "cached"
    code, out, err = cli("run", "--dataset", f"idx:{second}", "--root", tmp_path / "other", "--to", "schema", "--json")
    assert json.loads(out)["schema"]["source"] == f"curated:{generic}"  # another root starts afresh
