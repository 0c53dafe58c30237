"""Tests of the config tree: YAML sections, strict keys and types, flag overrides."""
import dataclasses

import pytest

from pipeline import config
from pipeline.engine.errors import ConfigError


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


@pytest.mark.parametrize("name", ["mnist.yaml", "fashion_mnist.yaml"])
def test_shipped_example_configs_load(name):
    from pathlib import Path

    cfg = config.load(Path(__file__).resolve().parent.parent / "configs" / name)
    assert cfg.evaluate.min_accuracy in (0.97, 0.88)


def test_durations():
    assert [config.parse_duration(t) for t in ("90", "90s", "10m", "1.5h")] == [90, 90, 600, 5400]
    with pytest.raises(ConfigError, match=r"duration 'soon': expected a positive number with s, m or h"):
        config.parse_duration("soon")


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
        config._build(config.Config, {"metadata": {"mysql": {"port": "x"}}})
