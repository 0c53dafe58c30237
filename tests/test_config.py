"""Tests of the config tree: YAML sections, strict keys and types, flag overrides."""
import dataclasses
import re

import pytest
import yaml

from pipeline import config
from engine.errors import ConfigError
from engine.settings import build


def test_yaml_sections_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("root: /r\ndata:\n  dataset: mnist\ntune:\n  max_trials: 3\n"
                    "statistics:\n  beam_args: ['--direct_num_workers=2']\nevaluate:\n  min_accuracy: 1\n")
    cfg = config.load(path)
    assert (cfg.root, cfg.data.dataset, cfg.tune.max_trials) == ("/r", "mnist", 3)
    assert cfg.statistics.beam_args == ("--direct_num_workers=2",)
    assert cfg.evaluate.min_accuracy == 1.0 and isinstance(cfg.evaluate.min_accuracy, float)
    cfg = config.override(cfg, root="/other", **{"tune.max_trials": 5, "train.epochs": None})
    assert (cfg.root, cfg.tune.max_trials, cfg.train.epochs) == ("/other", 5, config.TrainConfig().epochs)
    assert cfg.serving_dir.as_posix() == "/other/serving"


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("tune:\n  max_trails: 3\n")
    with pytest.raises(ConfigError, match=r"c.yaml: config: unknown key 'tune.max_trails'"):
        config.load(path)


def test_wrong_type_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: many\n")
    with pytest.raises(ConfigError, match=r"config 'train.epochs': expected int, got str 'many'"):
        config.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"absent.yaml: cannot read config file"):
        config.load(tmp_path / "absent.yaml")


@pytest.mark.parametrize("name, min_accuracy", [("mnist.yaml", 0.97), ("fashion_mnist.yaml", 0.88)])
def test_shipped_example_configs_load(name, min_accuracy):
    from pathlib import Path

    cfg = config.load(Path(__file__).resolve().parent.parent / "configs" / name)
    assert cfg.evaluate.min_accuracy == min_accuracy


def test_durations():
    assert [config.parse_duration(t) for t in ("90s", "10m", "1.5h")] == [90, 600, 5400]
    with pytest.raises(ConfigError, match=r"duration 'soon': expected a positive number with s, m or h"):
        config.parse_duration("soon")


def test_a_duration_without_its_unit_is_refused_and_a_yaml_budget_stays_seconds(tmp_path):
    from pipeline.flags import run_config

    with pytest.raises(ConfigError, match=r"^duration '5' has no unit: add s, m or h, e.g. 5m$"):
        config.parse_duration("5")
    for keyword in ("budget", "tune_budget"):  # the API's budget="5", as the flags
        with pytest.raises(ConfigError, match=r"duration '5' has no unit: add s, m or h"):
            run_config(None, tmp_path, None, **{keyword: "5"})
    (tmp_path / "budget.yaml").write_text("budget_seconds: 5\ntune: {budget_seconds: 90}\n")
    cfg = run_config(tmp_path / "budget.yaml", tmp_path, None)
    assert (cfg.budget_seconds, cfg.tune.budget_seconds) == (5.0, 90.0)
    assert run_config(None, tmp_path, None, budget="5m").budget_seconds == 300.0


def test_training_epochs_follow_the_recipe():
    cfg = config.Config()
    assert cfg.train_epochs == config.TUNED_EPOCHS
    untuned = config.override(cfg, **{"tune.enabled": False})
    assert untuned.train_epochs == 2  # the user's reference recipe
    assert config.override(untuned, **{"train.epochs": 5}).train_epochs == 5


def test_effective_config_round_trips_through_yaml_with_the_password_masked(tmp_path):
    cfg = config.override(config.Config(), **{"train.epochs": 3, "statistics.beam_args": ("--runner=DirectRunner",)})
    cfg = dataclasses.replace(cfg, metadata=config.MetadataConfig(mysql=config.MySQLConfig(host="db", password="s3")))
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml(cfg))
    loaded = config.load(path)
    assert loaded.metadata.mysql.password == "***" and "s3" not in path.read_text()
    assert dataclasses.replace(loaded, metadata=cfg.metadata) == cfg
    with pytest.raises(ConfigError, match="config 'metadata.mysql.port': expected int, got str"):
        build(config.Config, {"metadata": {"mysql": {"port": "x"}}})


def _leaves(cls, where=""):
    """Every key of the config tree, with its field."""
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{where}.{f.name}" if where else f.name
        hint = hints[f.name]
        inner = next((a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)), hint)
        if dataclasses.is_dataclass(inner):
            yield from _leaves(inner, key)
        else:
            yield key, f, hint


def _bad_value(field, hint):
    """A value the key must refuse: outside its limits when it has some, else of the wrong type."""
    limits = field.metadata.get("limits", {})
    if "choices" in limits:
        return "grid"
    if "prefix" in limits:
        return ["runner=Flink"]
    if "pattern" in limits:
        return "not a quantity or name!"
    for name, bad in (("low", lambda v: v - 1), ("above", lambda v: v), ("high", lambda v: v + 1),
                      ("below", lambda v: v)):
        if name in limits:
            return bad(limits[name])
    return {"a": 1}  # no limits: a mapping is of no key's type


KEYS = sorted(_leaves(config.Config))


@pytest.mark.parametrize("key, field, hint", KEYS, ids=[key for key, _, _ in KEYS])
def test_every_key_refuses_a_value_it_does_not_allow_naming_key_and_value(key, field, hint, tmp_path):
    bad = _bad_value(field, hint)
    section = bad
    for part in reversed(key.split(".")):
        section = {part: section}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(section))
    shown = repr(tuple(bad) if isinstance(bad, list) else bad)  # a list is read as a tuple
    with pytest.raises(ConfigError, match=rf"c.yaml: config '{key}': expected .*(got|got \w+) {re.escape(shown)}"):
        config.load(path)


@pytest.mark.parametrize("key, value, message", [
    ("tune.max_trials", -5, "config 'tune.max_trials': expected an integer at least 1 and at most 10000, got -5"),
    ("data.eval_fraction", 1.5, "config 'data.eval_fraction': expected a number more than 0 and less than 1, got 1.5"),
    ("data.test_fraction", -1, "config 'data.test_fraction': expected a number more than 0 and less than 1, got -1.0"),
    ("tune.tuner", "grid", "config 'tune.tuner': expected one of hyperband, bayesian, random, got 'grid'"),
    ("statistics.beam_args", ("runner=X",), "expected options that start with '--', got ('runner=X',)"),
])
def test_flags_are_checked_as_the_file_is(key, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config.override(config.Config(), **{key: value})


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))


@pytest.mark.parametrize("content, message", [
    (BOMB.encode(), r"bad.yaml: expands to over 10000 values through its aliases"),
    (b"seed: 7\ntrain:\n  epochs: 2\n  epochs: 3\n", r"bad.yaml: key 'epochs' appears twice \(line 4\)"),
    (b"root: caf\xe9\n", r"bad.yaml: not UTF-8 text \(byte 0xe9 at offset 9\)"),
    (b"seed: 4294967296\n", r"bad.yaml: config 'seed': expected an integer at least 0 and less than 4294967296"),
    (b"train:\n  batch_size: 1000000000\n", r"config 'train.batch_size': expected an integer at least 1 and at most"),
    (b"tune:\n  max_trials: 99999999\n", r"config 'tune.max_trials': expected an integer at least 1 and at most"),
    (b"budget_seconds: 1.0e+30\n", r"config 'budget_seconds': expected a number more than 0 and at most 604800"),
    (b"# " + b"x" * (2 << 20) + b"\n", r"bad.yaml: over 1048576 bytes"),
    (b"[" * 50_000 + b"]" * 50_000, r"bad.yaml: nested too deeply to read; expected a config file"),
    (b"train: " + b"{a: " * 50_000 + b"1" + b"}" * 50_000, r"bad.yaml: nested too deeply to read"),
])
def test_a_hostile_or_absurd_config_file_is_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as refused:
        config.load(path)
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 300


def test_a_long_wrong_value_is_shown_shortened():
    with pytest.raises(ConfigError, match=r"got 'x{20,60}\.\.\.x+'$"):
        config.override(config.Config(), **{"train.distribute": "x" * 100_000})


def test_invert_takes_yaml_booleans_and_refuses_other_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  invert: true\n")
    assert config.load(path).data.invert == "true"
    path.write_text("data:\n  invert: no\n")
    assert config.load(path).data.invert == "false"
    assert config.Config().data.invert == "auto"
    path.write_text("data:\n  invert: sometimes\n")
    with pytest.raises(ConfigError, match=r"config 'data.invert': expected one of auto, true, false, got 'sometimes'"):
        config.check(config.load(path))
    path.write_text("data:\n  dataset: true\n")  # only a key whose choices are spelled true/false takes a boolean
    with pytest.raises(ConfigError, match=r"config 'data.dataset': expected str, got bool True"):
        config.load(path)
    # The Python API's `invert=True` is the file's `true`; other keys still refuse a boolean.
    assert config.override(config.Config(), **{"data.invert": True}).data.invert == "true"
    assert config.override(config.Config(), **{"data.invert": False}).data.invert == "false"
    with pytest.raises(ConfigError, match=r"config 'data.dataset': expected str, got bool True"):
        config.override(config.Config(), **{"data.dataset": True})


def test_the_readme_lists_every_key_with_its_default():
    """The README's config block is the config tree's defaults, key for key."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("### Config file")[1].split("```yaml\n")[1].split("```")[0]
    listed = yaml.safe_load(block)
    defaults = yaml.safe_load(config.to_yaml(config.Config()))
    assert listed == defaults
