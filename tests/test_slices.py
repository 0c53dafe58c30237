"""Tests of the slices evaluate measures and gates, their intervals, and calibration."""
import keras
import numpy as np
import pytest

from components import slices
from components.calibration import calibration
from components.evaluate import evaluate
from components.train import Model


def test_wilson_and_paired_intervals_cover_what_they_should():
    assert slices.wilson(0, 10)[0] == 0 and 0.2 < slices.wilson(0, 10)[1] < 0.35  # a width at 0 right
    low, high = slices.wilson(900, 1000)
    assert low < 0.9 < high and high - low < 0.04
    same = np.ones(50, bool)
    change, lower, upper = slices.paired_difference(same, same)
    assert change == 0 and lower < 0 < upper  # no disagreement still leaves a width
    ours, theirs = np.r_[np.ones(60, bool), np.zeros(40, bool)], np.ones(100, bool)
    assert slices.paired_difference(ours, theirs)[2] < -0.3  # forty lost: shown worse


def test_slices_are_classes_and_quarters_and_the_small_ones_are_named():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 30, (400, 28, 28), dtype=np.uint8)  # faint noise: no pixel counts for the box
    images[:, 10:18, 10:18] = rng.integers(100, 256, (400, 1, 1), dtype=np.uint8)  # brightness varies
    labels = np.r_[np.zeros(390, int), np.ones(10, int)]
    found, masks = slices.define(images, labels, ("a", "b"), min_size=50)
    names = [s["name"] for s in found]
    assert names[:2] == ["class a", "class b"] and found[1] == {
        "name": "class b", "feature": "label", "low": 1, "high": 1, "too_small": True, "n": 10}
    quarters = [m for s, m in zip([s for s in found if not s.get("too_small")], masks) if s["feature"] == "mean_intensity"]
    assert len(quarters) == 4 and sum(int(m.sum()) for m in quarters) == 400  # every image in one quarter
    assert all(95 <= m.sum() <= 105 for m in quarters)
    # bbox_offset: every box is centred alike, so its quartiles tie and one quarter would hold every image:
    # the overall figure again, not a slice
    assert not [s for s in found if s["feature"] == "bbox_offset"]


def _measured(rng, n, accuracy, baseline_accuracy, groups):
    right, theirs = rng.random(n) < accuracy, rng.random(n) < baseline_accuracy
    masks = [np.arange(n) % groups == g for g in range(groups)]
    found = [{"name": f"slice {g}"} for g in range(groups)]
    return slices.measure(found, masks, right, theirs), masks, right, theirs


def test_a_slice_gate_does_not_block_by_noise_and_catches_a_real_regression():
    """40 slices of two equally good models (each right 90% of the time, independently): the gate at
    max_slice_regression 0 fails in at most 5% of evaluations; a 5-point loss on one slice of 2,500 images
    fails it, naming that slice."""
    rng = np.random.default_rng(1)
    failures = 0
    for _ in range(100):
        measured, masks, right, theirs = _measured(rng, 4000, 0.9, 0.9, 40)
        failures += not all(ok for ok, _ in slices.gate(measured, masks, right, theirs, None, 0.0, "v1"))
    assert failures <= 5
    right = rng.random(10000) < 0.9
    theirs = right.copy()
    slice_ = np.arange(10000) < 2500
    flip = slice_ & right & (rng.random(10000) < 0.055)
    right[flip] = False  # the candidate loses about 5 points on the first slice, nothing elsewhere
    masks = [slice_, ~slice_]
    measured = slices.measure([{"name": "dark"}, {"name": "rest"}], masks, right, theirs)
    (ok, reason), = slices.gate(measured, masks, right, theirs, None, 0.03, "baseline version 1")
    assert not ok and "dark (2,500 images)" in reason and "rest" not in reason
    assert slices.gate(measured, masks, right, theirs, None, 0.08, "v1")[0][0]  # within a looser threshold


def test_min_slice_accuracy_blocks_only_what_is_shown_below_it():
    rng = np.random.default_rng(2)
    measured, masks, right, theirs = _measured(rng, 400, 0.8, 0.8, 4)
    assert slices.gate(measured, masks, right, None, 0.8, None, "")[0][0]  # at the threshold: not shown below
    (ok, reason), = slices.gate(measured, masks, right, None, 0.95, None, "")
    assert not ok and "slice 0 (100 images)" in reason


def test_calibration_error_is_near_zero_when_confidence_is_accuracy_and_large_when_overconfident():
    rng = np.random.default_rng(3)
    confidence = rng.uniform(0.5, 1.0, 20000)
    labels = np.zeros(20000, int)
    right = rng.random(20000) < confidence  # right exactly as often as confident
    probabilities = np.stack([np.where(right, confidence, 1 - confidence), np.where(right, 1 - confidence, confidence)], 1)
    assert calibration(probabilities, labels)["ece"] < 0.02
    over = np.stack([np.where(right, 0.99, 0.01), np.where(right, 0.01, 0.99)], 1)  # always 99% sure
    found = calibration(over, labels)
    assert found["ece"] > 0.2 and sum(found["right"]) == right.sum() and sum(found["wrong"]) == (~right).sum()


@pytest.fixture(scope="module")
def blind_to_class_3(model, tmp_path_factory):
    """The fixture model with class 3's output switched off: it never predicts 3, and is otherwise the same."""
    trained = keras.models.load_model(model.path)
    kernel, bias = trained.layers[-1].get_weights()
    bias[3] = -1e4
    trained.layers[-1].set_weights([kernel, bias])
    out = tmp_path_factory.mktemp("blind")
    trained.save(out / "model.keras")
    return Model(uri=str(out), fingerprint="blind", history={}, classes=model.classes)


def test_a_model_that_passes_overall_but_loses_a_slice_is_not_blessed_naming_it(
        model, blind_to_class_3, examples, tmp_path):
    """Against the serving model, the candidate blind to class 3 passes the overall gates (lenient here) and
    fails the per-slice one, which names class 3; the report's slice table marks it."""
    from components.evaluate import summarize
    from components.evaluate_report import report_section
    from components.push import push

    first = evaluate(model, examples, None, out_dir=tmp_path, min_accuracy=0.0, min_slice_size=4)
    (tmp_path / "push").mkdir()
    pushed = push(model, first, examples, out_dir=tmp_path / "push", serving_dir=tmp_path / "serving")
    ev = evaluate(blind_to_class_3, examples, pushed, out_dir=tmp_path, min_accuracy=0.0, max_regression=1.0,
                  min_slice_size=4)
    assert not ev.blessed and len(ev.failed) == 1, ev.reasons
    assert "max_slice_regression 0.0300" in ev.failed[0] and "class 3 (" in ev.failed[0]
    class_3 = next(s for s in ev.slices if s["name"] == "class 3")
    assert class_3["accuracy"] == 0 and class_3["change"] < 0 and class_3["wrong"]
    html = report_section({**summarize(ev, {}), "status": "not_blessed"}, {"ingest": examples})[2]
    assert "<span class='bad'>class 3</span>" in html and "reliability diagram" in html
    assert "misclassified in class 3" in html
    same = evaluate(model, examples, pushed, out_dir=tmp_path, min_accuracy=0.0, min_slice_size=4)
    assert same.blessed and any("no slice shown worse" in r for r in same.reasons)


def test_push_decides_the_slice_gate_again_against_a_version_pushed_after_evaluation(
        model, blind_to_class_3, examples, tmp_path):
    """The blind model, evaluated when nothing served, meets a version pushed meanwhile at push: its class 3
    slice is shown worse than that version's, so nothing is pushed, and the reason names the slice."""
    from components.push import push
    from engine.errors import NotBlessed

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    blind = evaluate(blind_to_class_3, examples, None, out_dir=tmp_path / "a", min_accuracy=0.0, max_regression=1.0,
                     min_slice_size=4)
    good = evaluate(model, examples, None, out_dir=tmp_path / "b", min_accuracy=0.0, min_slice_size=4)
    assert blind.blessed and good.blessed
    (tmp_path / "push").mkdir()
    push(model, good, examples, out_dir=tmp_path / "push", serving_dir=tmp_path / "serving")
    with pytest.raises(NotBlessed, match=r"pushed after this model was evaluated; slice accuracy vs version 1 shown "
                                         r"worse than max_slice_regression 0.0300: .*class 3 \("):
        push(blind_to_class_3, blind, examples, out_dir=tmp_path / "push", serving_dir=tmp_path / "serving")
    assert sorted(p.name for p in (tmp_path / "serving").iterdir()) == ["1"]


def test_runs_compare_pairs_two_evaluations_per_slice_worst_first(model, blind_to_class_3, examples, tmp_path):
    from pipeline import compare

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    good = evaluate(model, examples, None, out_dir=tmp_path / "a", min_accuracy=0.0, min_slice_size=4)
    blind = evaluate(blind_to_class_3, examples, None, out_dir=tmp_path / "b", min_accuracy=0.0, min_slice_size=4)
    result = compare.compare(("A", good), ("B", blind))
    assert result["paired"] and result["rows"][0]["slice"] == "overall"
    worst = result["rows"][1]
    assert worst["slice"] == "class 3" and worst["b"] == 0 and worst["high"] < 0  # shown worse
    assert worst["change"] == pytest.approx(-worst["a"], abs=1e-4)
    assert worst["shown"] and not result["rows"][-1]["shown"]  # the best row: no change to show
    assert any("class 3" in line and line.endswith("(shown)") for line in compare.lines(result))
    # the same labels on other images (another ingested dataset): not paired
    saved = dict(np.load(tmp_path / "b" / "predictions.npz"))
    np.savez(tmp_path / "b" / "predictions.npz", **{**saved, "data": np.array("another dataset")})
    assert not compare.compare(("A", good), ("B", blind))["paired"]
    # without the saved predictions (evaluated before they were kept): independent samples, wider intervals
    (tmp_path / "b" / "predictions.npz").unlink()
    unpaired = compare.compare(("A", good), ("B", blind))
    assert not unpaired["paired"]
    assert {r["slice"] for r in unpaired["rows"]} == {r["slice"] for r in result["rows"]}


def test_a_run_that_passes_overall_but_loses_a_class_is_not_blessed_exit_4_naming_the_slice(tmp_path):
    """Through the CLI: a second build whose training data call most 3s 4s is within the (lenient) overall
    regression gate and below the serving model on the class 3 slice: exit 4, the slice named, nothing pushed."""
    import json
    import shutil

    from conftest import write_dataset
    from components.idx import read_idx, write_idx
    from test_cli import assert_one_line_error, cli

    first = write_dataset(tmp_path / "first", {"train": 400, "t10k": 200}, seed=5)
    second = tmp_path / "second"
    shutil.copytree(first, second)
    labels = read_idx(second / "train-labels-idx1-ubyte.gz").copy()
    threes = np.flatnonzero(labels == 3)
    labels[threes[8:]] = 4  # eight 3s kept: every split still holds the class
    write_idx(second / "train-labels-idx1-ubyte.gz", labels)
    build = ("--root", tmp_path / "root", "--no-tune", "--epochs", "4", "--min-accuracy", "0", "--max-regression",
             "1", "--min-slice-size", "10", "--json")
    code, out, err = cli("run", "--dataset", f"idx:{first}", *build)
    assert code == 0 and json.loads(out)["status"] == "pushed", err
    code, out, err = cli("run", "--dataset", f"idx:{second}", *build)
    summary = json.loads(out)
    assert code == 4 and summary["status"] == "not_blessed", err
    assert_one_line_error(err, "model not blessed: slice accuracy vs baseline version 1 shown worse than "
                               "max_slice_regression 0.0300", "class 3 (")
    assert [r for r in summary["evaluation"]["failed"] if "max_regression" in r] == []  # the overall gate passed
    assert sorted(p.name for p in (tmp_path / "root" / "serving").iterdir()) == ["1"]


def test_the_slicing_spec_names_the_features_whose_quarters_are_slices_and_refuses_others():
    from components.evaluate import EvaluateConfig
    from engine.errors import ConfigError
    from engine.settings import check

    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (80, 28, 28), dtype=np.uint8)
    found, _ = slices.define(images, np.arange(80) % 2, ("a", "b"), 10, ("center_col",))
    assert {s["feature"] for s in found} == {"label", "center_col"} and len(found) == 6
    assert {s["feature"] for s in slices.define(images, np.arange(80) % 2, ("a", "b"), 10, ())[0]} == {"label"}
    with pytest.raises(ConfigError, match=r"^config 'evaluate.slice_features': 'brightness' is not a summary "
                                          r"feature; expected some of mean_intensity, "):
        check(EvaluateConfig(slice_features=("mean_intensity", "brightness")))
