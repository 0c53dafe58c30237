"""The pipeline's one frozen config tree: pipeline-wide settings and one section per node, derived from the declaration."""
from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

from components import budget, push, schema
from components.budget import TUNED_EPOCHS, WEEK
from components.train import TrainConfig
from engine import config_file
from engine.dag import Pipeline
from engine.errors import ConfigError
from engine.settings import check, override, param, parse_duration, tree
from engine.settings import allowed as allowed_in
from pipeline import kfp_config
from pipeline.definition import PRODUCTION

# Besides its own: what callers of the config read here (the defaults users read about, the section most
# callers build alone, checking and overriding a tree, the error all of it raises).
__all__ = ["Config", "Settings", "MetadataConfig", "MySQLConfig", "Store", "config_for", "allowed", "load", "to_dict",
           "to_yaml", "MASKED", "PASSWORD_ENV", "TUNED_EPOCHS", "TrainConfig", "ConfigError", "check", "override",
           "parse_duration"]

MASKED = "***"  # a password as the run records show it
PASSWORD_ENV = "PIPELINE_MYSQL_PASSWORD"


@dataclass(frozen=True)
class Settings:
    """The whole pipeline's configuration: pipeline-wide settings, then a section per component."""

    root: str = "pipeline_root"
    seed: int = param(42, low=0, below=2**32, flag="--seed",  # NumPy and TensorFlow take 32 bits
                      help="seeds shuffling, initialisation and the search")
    # wall clock for the whole build (components.budget)
    budget_seconds: float | None = param(None, above=0, high=WEEK, flag="--budget", parse=parse_duration,
                                         metavar="DURATION", help="wall clock for the whole build, ingest to push, "
                                         "e.g. 15m: shared between search and final training (default: none)")


@dataclass(frozen=True)
class MySQLConfig:
    """A MySQL database for ML Metadata shared by several machines or roots."""

    host: str = "localhost"
    port: int = param(3306, low=1, high=65535)
    database: str = "mlmd"
    user: str = "root"
    password: str = ""  # empty (or masked): the PIPELINE_MYSQL_PASSWORD environment variable

    @property
    def secret(self) -> str:
        """The password to connect with: the config's, else `$PIPELINE_MYSQL_PASSWORD`, so that neither the
        YAML file nor a recorded config (where it is masked) has to hold it."""
        return self.password if self.password not in ("", MASKED) else os.environ.get(PASSWORD_ENV, "")


@dataclass(frozen=True)
class MetadataConfig:
    """Where ML Metadata records runs: SQLite `<root>/metadata.sqlite` by default, or MySQL."""

    sqlite: str | None = None  # None: <root>/metadata.sqlite
    mysql: MySQLConfig | None = None


@dataclass(frozen=True)
class Store:
    """The settings after the components' sections."""

    metadata: MetadataConfig = field(default_factory=MetadataConfig)


# What the whole config answers for the nodes: the policies of components that read several sections.
DERIVED = {"serving_dir": property(push.serving_dir), "schema_dir": property(schema.schema_dir),
           "train_epochs": property(budget.planned_epochs), "schedule": property(budget.planned_schedule)}


@functools.lru_cache(maxsize=None)
def config_for(pipeline: Pipeline) -> type:
    """The config tree of `pipeline`: `Settings`, one section per node that declares settings, `Store`, and
    `kubeflow` (what its KFP tasks request, with a key per node).

    Example:
        >>> config_for(PRODUCTION)().tune.max_epochs
        2
    """
    kubeflow = kfp_config.section(pipeline)
    tail = dataclasses.make_dataclass("Store", [("kubeflow", kubeflow, field(default_factory=kubeflow))],
                                      bases=(Store,), frozen=True, namespace={"__doc__": Store.__doc__})
    return tree("Config", Settings, pipeline.sections(), tail, DERIVED)


Config = config_for(PRODUCTION)


def allowed(key: str, cls: type = Config) -> tuple:
    """The values a dotted key allows when it is a choice, e.g. `allowed("train.distribute")`."""
    return allowed_in(cls, key)


def load(path: str | Path | None, cls: type = Config):
    """Loads a YAML config file with a section per component; None gives the defaults.

    Raises:
        ConfigError: the file is missing, not YAML, or has an unknown key or a wrongly typed value.
    """
    return config_file.load(cls, path)


def to_dict(cfg) -> dict:
    """The config as plain data, for the run record; a MySQL password is masked."""
    data = dataclasses.asdict(cfg)
    if data["metadata"]["mysql"] and data["metadata"]["mysql"]["password"]:
        data["metadata"]["mysql"]["password"] = MASKED
    return data


def to_yaml(cfg) -> str:
    """The config as YAML that `load` reads back (with a section per component)."""
    return config_file.dump(to_dict(cfg))
