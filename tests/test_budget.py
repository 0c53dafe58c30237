"""Tests of the whole-build budget: its policy, the search's share, and training that plans its epochs."""
import dataclasses
import time

import pytest

from components import budget
from components.cnn import REFERENCE
from components.train import train
from components.tune import tune
from components.budget import UNCAPPED
from components.train import TrainConfig
from components.tune import HyperParameters, TuneConfig
from pipeline.config import Config, override

REFERENCE_HP = HyperParameters(uri="", fingerprint="x", tuner="none", values=dict(REFERENCE), trials=())


def test_the_search_gets_its_share_of_the_time_left_or_none():
    # 900 s budget, 100 s gone: 870 s before the 30 s reserve, 40% of it at most for the search.
    assert budget.search_seconds(deadline=1000.0, budget=900.0, now=100.0) == pytest.approx(0.4 * 870)
    assert budget.search_seconds(deadline=1000.0, budget=900.0, now=100.0, tune_budget=60.0) == 0.0  # < minimum
    assert budget.search_seconds(deadline=1000.0, budget=900.0, now=100.0, tune_budget=200.0) == 200.0
    assert budget.search_seconds(deadline=300.0, budget=300.0, now=90.0) == 0.0  # 5 minutes: train it longer
    assert budget.reserve(3600.0) == pytest.approx(108.0) and budget.reserve(300.0) == 30.0


def test_epochs_that_fit_never_undo_work_nor_pass_the_cap():
    assert budget.epochs_that_fit(done=1, epoch_seconds=30.0, now=0.0, end=100.0, most=50) == 4
    assert budget.epochs_that_fit(done=3, epoch_seconds=30.0, now=200.0, end=100.0, most=50) == 3  # late
    assert budget.epochs_that_fit(done=1, epoch_seconds=1.0, now=0.0, end=1e6, most=7) == 7


def test_cosine_decays_from_the_initial_rate_to_zero():
    rates = [budget.cosine(1e-3, p / 10) for p in range(11)]
    assert rates[0] == pytest.approx(1e-3) and rates[5] == pytest.approx(5e-4) and rates[-1] == pytest.approx(0)
    assert all(a > b for a, b in zip(rates, rates[1:]))


def test_config_budget_gives_cosine_and_no_cap_on_epochs_or_trials_unless_set():
    cfg = override(Config(), budget_seconds=900.0)
    assert (cfg.schedule, cfg.train_epochs) == ("cosine", UNCAPPED)
    assert (budget.planned_trials(None, True), budget.planned_trials(None, False), budget.planned_trials(4, True)) \
        == (UNCAPPED, 10, 4)
    assert (Config().schedule, Config().train_epochs) == ("constant", 10)
    assert override(cfg, **{"train.schedule": "constant", "train.epochs": 4}).train_epochs == 4


def test_a_budget_too_short_for_a_search_gives_the_reference(examples, generic_schema, tmp_path, seed):
    hp = tune(examples, generic_schema, out_dir=tmp_path, tune=TuneConfig(max_trials=3), batch_size=64, seed=seed,
              budget=300.0, deadline=time.time() + 200)
    assert (hp.tuner, hp.values, hp.trials, hp.allotted, hp.search) == ("none", REFERENCE, (), 0.0, "")


def test_training_past_its_deadline_runs_one_epoch(examples, generic_schema, tmp_path, seed):
    model = train(examples, generic_schema, REFERENCE_HP, out_dir=tmp_path, seed=seed, budget=300.0,
                  deadline=time.time(), train=TrainConfig(epochs=5, batch_size=64, schedule="cosine"))
    assert len(model.history["val_accuracy"]) == 1
    assert (model.plan["ended"], model.plan["epochs_run"], model.plan["schedule"]) == ("budget", 1, "cosine")


def test_cosine_training_decays_the_rate_and_does_not_stop_early(examples, generic_schema, tmp_path, seed):
    # patience 0 would stop a constant-rate run at its first epoch without a better score
    model = train(examples, generic_schema, REFERENCE_HP, out_dir=tmp_path, seed=seed,
                  train=TrainConfig(epochs=4, patience=0, batch_size=64, schedule="cosine"))
    rates = model.plan["learning_rates"]
    assert model.plan["ended"] == "epochs" and len(rates) == 4
    assert rates == pytest.approx([budget.cosine(1e-3, e / 4) for e in range(4)], rel=1e-5)
    assert "learning_rate" not in model.history


def test_run_under_a_budget_pushes_and_accounts_for_its_time(idx_dir, tmp_path):
    from pipeline import api

    # 100 s leaves the search less than its minimum on any machine: the reference trains, cosine, 3 epochs
    # at most (1 on a machine slow enough to reach training past the deadline); any accuracy is blessed.
    summary = api.run(f"idx:{idx_dir}", root=tmp_path / "root", budget="100s", epochs=3, min_accuracy=0.0)
    spent = summary["budget"]
    assert summary["status"] == "pushed" and spent["seconds"] == 100.0
    assert set(spent["components"]) == {"ingest", "statistics", "schema", "validate", "tune", "train", "evaluate",
                                        "push"}
    assert spent["search"]["allotted_seconds"] == 0.0 and spent["search"]["trials"] == []
    assert spent["training"]["schedule"] == "cosine" and spent["training"]["ended"] in ("epochs", "budget")
    assert len(spent["training"]["epoch_seconds"]) == spent["training"]["epochs_run"] <= 3
    assert "cosine learning rate" in (tmp_path / "root" / "runs" / summary["run_id"] / "report.html").read_text()
    again = api.run(f"idx:{idx_dir}", root=tmp_path / "root", budget="100s", epochs=3, min_accuracy=0.0)
    assert {c["state"] for c in again["components"].values()} == {"cached"}  # the deadline is not in the key


def _trial(trial_id, scores, epoch_seconds, ended_at=None):
    return {"trial_id": trial_id, "score": max(scores), "curve": [[e, v] for e, v in enumerate(scores)],
            "epoch_seconds": epoch_seconds, "ended_at": ended_at}


def test_trials_are_ranked_by_their_accuracy_after_the_training_the_time_left_buys():
    # The wide trial scores 0.0003 more after half a pass but takes 6x as long an epoch.
    reference, wide = _trial("00", [0.80, 0.85], 2.0), _trial("01", [0.8003, 0.8503], 12.0)
    assert budget.best_predicted((reference, wide), seconds=600.0, fraction=0.25)["trial_id"] == "00"
    # With time for both to reach their plateau, the higher curve wins.
    assert budget.best_predicted((reference, wide), seconds=1e9, fraction=0.25)["trial_id"] == "01"
    # Clearly better after the same passes: worth its slower epochs.
    better = _trial("02", [0.81, 0.86], 12.0)
    assert budget.best_predicted((reference, wide, better), seconds=600.0, fraction=0.25)["trial_id"] == "02"
    predicted = budget.predictions((reference, wide, better), seconds=600.0, fraction=0.25)
    assert predicted["00"] > 0.85 and predicted["02"] > predicted["00"]  # more training, more accuracy
    assert budget.best_predicted(({"trial_id": "00", "score": None},), 600.0, 0.25) is None
    assert budget.best_predicted(({"trial_id": "00", "score": 0.5}, {"trial_id": "01", "score": 0.6}), 60.0, 0.25) \
        == {"trial_id": "01", "score": 0.6}  # no curves (an older search): the best score


def test_the_curves_share_one_shape_and_fit_its_exponent_from_three_passes_or_more():
    from components.curves import PRIOR_EXPONENT, fit

    truth = lambda ceiling, p: ceiling - 0.05 * p ** -0.7  # noqa: E731
    points = {str(i): [(p, truth(0.95 - i / 100, p)) for p in (0.25, 0.5, 0.75, 1.0)] for i in range(3)}
    curves = fit(points)
    assert curves.exponent == pytest.approx(0.7) and curves.scale == pytest.approx(0.05, abs=1e-9)
    assert curves.ceilings == pytest.approx({"0": 0.95, "1": 0.94, "2": 0.93})
    assert fit({"0": [(0.25, 0.8), (0.5, 0.85)]}).exponent == PRIOR_EXPONENT  # two passes fit any exponent
    assert fit({"0": [(0.5, 0.9), (1.0, 0.85)]}).scale == 0.0  # falling: flat, not a negative gain
    assert fit({"0": [(0.5, 0.9)]}).at("0", 100.0) == 0.9 and fit({}) is None
    assert fit({"0": [(0.25, 0.99), (0.5, 0.999)]}).ceilings["0"] == 1.0  # never past accuracy 1


def test_a_search_whose_trials_stop_raising_the_prediction_has_plateaued():
    better = [_trial(str(i), [0.80 + i / 100, 0.85 + i / 100], 2.0, ended_at=10.0 * i) for i in range(6)]
    assert not budget.search_plateaued(tuple(better), training_end=600.0, fraction=0.25, patience=5)
    worse = [better[0]] + [_trial(str(i), [0.78, 0.83], 2.0, ended_at=10.0 * i) for i in range(1, 6)]
    assert not budget.search_plateaued(tuple(worse[:5]), training_end=600.0, fraction=0.25, patience=5)
    assert budget.search_plateaued(tuple(worse), training_end=600.0, fraction=0.25, patience=5)
    # As good as the best, but later: the time it took is training lost, so it does not raise the prediction.
    same = [better[0]] + [_trial(str(i), [0.80, 0.85], 2.0, ended_at=10.0 * i) for i in range(1, 6)]
    assert budget.search_plateaued(tuple(same), training_end=600.0, fraction=0.25, patience=5)
    # A flat curve (tiny data learnt at once) has reached its plateau: training plans no more epochs.
    assert budget.plateau_passes((_trial("0", [0.9, 0.9, 0.9], 1.0),), 0.25) == 0.0
    assert budget.plateau_passes((_trial("0", [0.80, 0.85], 2.0),), 0.25) > 100


def test_every_step_of_a_run_shares_its_deadline(tmp_path):
    from pipeline.definition import PRODUCTION
    from pipeline.local import open_run

    cfg = override(Config(), root=str(tmp_path), budget_seconds=600.0)
    first = open_run(cfg, "kfp-1", PRODUCTION)[1].deadline
    time.sleep(1.1)  # a deadline counted from each step's own start would move by a second
    later_step = open_run(cfg, "kfp-1", PRODUCTION, alone=False)[1].deadline
    assert first == later_step and first <= time.time() + 600
    assert open_run(dataclasses.replace(cfg, budget_seconds=None), "kfp-2", PRODUCTION)[1].deadline is None


def test_a_budgeted_search_ranks_its_trials_by_prediction_and_ends_at_its_plateau(examples, generic_schema, tmp_path,
                                                                                  seed, monkeypatch):
    # Patience 0: the search ends after its first trial, the reference, saying why.
    monkeypatch.setattr(budget, "SEARCH_PATIENCE", 0)
    hp = tune(examples, generic_schema, out_dir=tmp_path, tune=TuneConfig(max_epochs=2), batch_size=64, seed=seed,
              budget=3600.0, deadline=time.time() + 3600)
    (reference,) = hp.trials
    assert (hp.ended, hp.fraction, hp.values) == ("plateau", budget.SEARCH_SUBSET, REFERENCE)
    assert [epoch for epoch, _ in reference["curve"]] == list(range(reference["epochs"]))
    assert reference["score"] == max(score for _, score in reference["curve"]) and reference["epoch_seconds"] > 0
    assert 0 < reference["predicted"] <= 1


def test_a_long_budgeted_training_moves_its_images_unless_the_user_says_otherwise():
    probed = {"chosen": {"precision": "mixed_bfloat16", "steps_per_execution": 16},
              "step_ms": {"float32/spe1": 20.0, "mixed_bfloat16/spe16": 8.0}, "at": 1000.0}
    # 8 ms a step, 422 steps an epoch: 3.4 s an epoch, so 50 passes take 169 s from the probe's time.
    assert budget.planned_shift(None, probed, 422, end=1000.0 + 170.0) == budget.AUTO_SHIFT
    assert budget.planned_shift(None, probed, 422, end=1000.0 + 160.0) == 0
    assert budget.planned_shift(0, probed, 422, end=10_000.0) == 0  # --shift 0
    assert budget.planned_shift(3, None, 422, end=None) == 3  # --shift 3, budget or not
    # No probe (a multi-device or deterministic training), or one saved before probes had a time: as configured.
    assert budget.planned_shift(None, None, 422, end=10_000.0) == 0
    assert budget.planned_shift(None, {k: v for k, v in probed.items() if k != "at"}, 422, end=10_000.0) == 0
    assert budget.planned_shift(None, probed, 422, end=None) == 0
