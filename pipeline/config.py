"""The pipeline's one frozen config tree, loadable from YAML with a section per component."""
from __future__ import annotations

import dataclasses
import operator
import os
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.errors import ConfigError, first_line

# The product's own thresholds for datasets whose accuracy users know (MNIST: the user's claim).
DEFAULT_MIN_ACCURACY = {"mnist": 0.97, "fashion_mnist": 0.88, "kmnist": 0.90}
FALLBACK_MIN_ACCURACY = 0.88
TUNED_EPOCHS, REFERENCE_EPOCHS = 10, 2  # training epochs when train.epochs is unset
BUDGET_EPOCHS = 50  # training epochs at most under a whole-build budget when train.epochs is unset
MAX_FILE_BYTES = 1 << 20  # a config file is a few hundred bytes: anything over a MiB is not one
MAX_NODES = 10_000  # YAML values, counted with aliases expanded: a bomb of nested aliases stops here
WEEK = 7 * 24 * 3600.0
_shown = reprlib.Repr()
_shown.maxstring, _shown.maxother, _shown.maxlist, _shown.maxtuple, _shown.maxdict = 60, 60, 6, 6, 6


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `90`, `90s`, `10m` or `1.5h`.

    Example:
        >>> parse_duration("10m")
        600.0
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match or float(match[1]) <= 0:
        raise ConfigError(f"duration '{text}': expected a positive number with s, m or h, e.g. 10m")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def setting(default: Any, *, choices: tuple | None = None, low: float | None = None, above: float | None = None,
            high: float | None = None, below: float | None = None, prefix: str | None = None):
    """A config key's default and what values it allows, checked by `check` when config and flags are read:
    one of `choices`, at least `low`, more than `above`, at most `high`, less than `below`, or (for each
    item of a list of strings) starting with `prefix`. None, where the type allows it, always passes."""
    limits = {k: v for k, v in (("choices", choices), ("low", low), ("above", above), ("high", high),
                                ("below", below), ("prefix", prefix)) if v is not None}
    return field(default=default, metadata={"limits": limits})


def allowed(key: str) -> tuple:
    """The values a dotted key allows when it is a choice, e.g. `allowed("train.distribute")`."""
    section, _, name = key.rpartition(".")
    cls = typing.get_type_hints(Config)[section] if section else Config
    return next(f.metadata["limits"]["choices"] for f in dataclasses.fields(cls) if f.name == name)


# Each limit: the test a value must pass, and how the error says it.
LIMITS = {
    "choices": (lambda value, bound: value in bound, lambda bound: "one of " + ", ".join(map(str, bound))),
    "low": (operator.ge, "at least {}".format),
    "above": (operator.gt, "more than {}".format),
    "high": (operator.le, "at most {}".format),
    "below": (operator.lt, "less than {}".format),
    "prefix": (lambda value, bound: all(str(v).startswith(bound) for v in value),
               lambda bound: f"options that start with {bound!r}"),
}


def _expected(limits: dict, hint) -> str:
    said = " and ".join(LIMITS[name][1](bound) for name, bound in limits.items())
    ranged = {"low", "above", "high", "below"} & set(limits)
    return f"{'an integer' if hint is int else 'a number'} {said}" if ranged else said


def _allowed(value: Any, limits: dict) -> bool:
    return value is None or all(LIMITS[name][0](value, bound) for name, bound in limits.items())


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to ingest and how to split it."""

    dataset: str = "fashion_mnist"
    eval_fraction: float = setting(0.1, above=0, below=1)  # carved from train by content hash
    test_fraction: float = setting(0.15, above=0, below=1)  # only for a directory that holds a single split
    tfds_data_dir: str | None = None
    # Polarity: true inverts every image (255 - x); auto those of a dataset whose median background is light
    # (dark ink on a light sheet, components.image_features.LIGHT). Recorded with the data and the model.
    invert: str = setting("auto", choices=("auto", "true", "false"))


@dataclass(frozen=True)
class StatisticsConfig:
    """Beam options for statistics generation (e.g. `--runner=FlinkRunner`)."""

    beam_args: tuple[str, ...] = setting((), prefix="--")


@dataclass(frozen=True)
class SchemaConfig:
    """Where curated schemas live; a file here overrides inference."""

    schema_dir: str | None = None  # None: the `schemas/` shipped with the project
    schema_file: str | None = None


@dataclass(frozen=True)
class ValidateConfig:
    """Data validation gates; schema anomalies and train-versus-test skew always apply."""

    drift: bool = True  # compare each new span's train split with the previous span's
    # The chance that a check of clean data alarms: shared by its features, comparisons and model views.
    false_positive_rate: float = setting(0.001, above=0, below=1)


TUNERS = ("hyperband", "bayesian", "random")


@dataclass(frozen=True)
class TuneConfig:
    """KerasTuner search settings."""

    enabled: bool = True
    tuner: str = setting("hyperband", choices=TUNERS)
    max_trials: int = setting(10, low=1, high=10_000)
    max_epochs: int = setting(2, low=1, high=1000)
    budget_seconds: float | None = setting(None, above=0, high=WEEK)  # wall clock for the whole search
    # The share of the train split each trial trains on (multi-fidelity); None: all of it, or a quarter
    # under a whole-build budget (components.budget.SEARCH_SUBSET).
    train_fraction: float | None = setting(None, above=0, high=1)
    retune: bool = False  # search again even when a result for this schema and space exists


@dataclass(frozen=True)
class TrainConfig:
    """Final training with the best hyperparameters, and the devices it (and tuning) runs on."""

    # None: 10 after a search, the reference recipe's 2 without one
    epochs: int | None = setting(None, low=1, high=10_000)
    patience: int = setting(2, low=0, high=10_000)
    batch_size: int = setting(128, low=1, high=65_536)
    deterministic: bool = False  # op determinism and ordered tf.data: repeatable to the bit, slower
    # auto: MirroredStrategy over 2+ GPUs; mirrored: over all GPUs, else all CPUs; none
    distribute: str = setting("auto", choices=("auto", "mirrored", "none"))
    mixed_precision: str = setting("auto", choices=("auto", "on", "off"))  # auto: mixed_float16 on a GPU
    tensorboard: bool = True  # logs under <root>/runs/<run_id>/tensorboard
    # The learning rate over training: constant (the reference recipe) or a cosine decay to 0 over the
    # epochs planned, without early stopping; auto: cosine under a whole-build budget, else constant.
    schedule: str = setting("auto", choices=("auto", "constant", "cosine"))
    warm_start: bool = True  # start from the best trial's weights when the search ran on the same examples


@dataclass(frozen=True)
class EvaluateConfig:
    """Blessing thresholds: absolute, and the change against the latest blessed model."""

    min_accuracy: float | None = setting(None, low=0, high=1)  # None: the dataset's default (DEFAULT_MIN_ACCURACY)
    min_class_recall: float | None = setting(None, low=0, high=1)  # every class's recall at least this, when set
    max_regression: float = setting(0.005, low=0, high=1)  # how far below the serving model's accuracy it may fall
    # A serving model that cannot be read: fail (the run stops, naming it) or ignore (absolute thresholds only).
    baseline_broken: str = setting("fail", choices=("fail", "ignore"))


@dataclass(frozen=True)
class PushConfig:
    """Where blessed models go; None means `<root>/serving`."""

    serving_dir: str | None = None


MASKED = "***"  # a password as the run records show it
PASSWORD_ENV = "PIPELINE_MYSQL_PASSWORD"


@dataclass(frozen=True)
class MySQLConfig:
    """A MySQL database for ML Metadata shared by several machines or roots."""

    host: str = "localhost"
    port: int = setting(3306, low=1, high=65535)
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
class Config:
    """The whole pipeline's configuration.

    Example:
        >>> cfg = override(load("mnist.yaml"), root="/tmp/root", **{"tune.max_trials": 2})
    """

    root: str = "pipeline_root"
    seed: int = setting(42, low=0, below=2**32)  # NumPy and TensorFlow take 32 bits
    # wall clock for the whole build (components.budget)
    budget_seconds: float | None = setting(None, above=0, high=WEEK)
    data: DataConfig = field(default_factory=DataConfig)
    statistics: StatisticsConfig = field(default_factory=StatisticsConfig)
    schema: SchemaConfig = field(default_factory=SchemaConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    push: PushConfig = field(default_factory=PushConfig)
    metadata: MetadataConfig = field(default_factory=MetadataConfig)

    @property
    def serving_dir(self) -> Path:
        return Path(self.push.serving_dir or Path(self.root) / "serving")

    @property
    def train_epochs(self) -> int:
        """Training epochs at most: the configured number, else as many as the budget allows (up to 50),
        else 10 after a search or 2 for the reference recipe."""
        if self.train.epochs is not None:
            return self.train.epochs
        if self.budget_seconds is not None:
            return BUDGET_EPOCHS
        return TUNED_EPOCHS if self.tune.enabled else REFERENCE_EPOCHS

    @property
    def schedule(self) -> str:
        """The learning-rate schedule `train.schedule` resolves to: `auto` is cosine under a budget."""
        if self.train.schedule != "auto":
            return self.train.schedule
        return "cosine" if self.budget_seconds is not None else "constant"

    @property
    def schema_dir(self) -> Path:
        return Path(self.schema.schema_dir or Path(__file__).resolve().parent.parent / "schemas")


def check(cfg, where: str = ""):
    """Returns `cfg` when every key holds a value its setting allows (recursively), else raises ConfigError
    naming the key, the value and what is allowed. Called whenever config and flags are read, so a bad
    value stops a run before anything runs.

    Example:
        >>> check(override(Config(), **{"tune.max_trials": -5}))
        Traceback (most recent call last):
        engine.errors.ConfigError: config 'tune.max_trials': expected an integer at least 1 and at most 10000, ...
    """
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(value):
            check(value, key)
        elif not _allowed(value, f.metadata.get("limits", {})):
            hint = next((a for a in typing.get_args(hints[f.name]) if a is not type(None)), hints[f.name])
            raise ConfigError(f"config '{key}': expected {_expected(f.metadata['limits'], hint)}, "
                              f"got {_shown.repr(value)}")
    return cfg


def _coerce(value, hint, where: str):
    """Checks `value` against a type hint, converting lists to tuples; raises ConfigError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        return _coerce(value, hint, where)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"config '{where}': expected a section (mapping), got {_shown.repr(value)}")
        return _build(hint, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config '{where}': expected a list, got {_shown.repr(value)}")
        return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    ok = (isinstance(value, hint) and not (hint is int and isinstance(value, bool))
          or hint is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        raise ConfigError(f"config '{where}': expected {hint.__name__}, got {type(value).__name__} "
                          f"{_shown.repr(value)}")
    return float(value) if hint is float else value


def _build(cls, data: dict, where: str = ""):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        name = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"config: unknown key '{name}'; known keys{' in ' + where if where else ''}: "
                          f"{', '.join(sorted(known))}")
    choices = {f.name: f.metadata.get("limits", {}).get("choices", ()) for f in dataclasses.fields(cls)}
    # YAML reads `invert: true` as a boolean: where "true" and "false" are choices, the boolean is its spelling.
    data = {k: ("true" if v else "false") if isinstance(v, bool) and "true" in choices[k] else v
            for k, v in data.items()}
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()})


def load(path: str | Path | None) -> Config:
    """Loads a YAML config file; None gives the defaults.

    Raises:
        ConfigError: the file is missing, not YAML, or has an unknown key or a wrongly typed value.
    """
    if path is None:
        return Config()
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: over {MAX_FILE_BYTES} bytes; expected a config file of a few sections")
    try:
        data = _parse_yaml(raw.decode("utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({first_line(exc)})") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    try:
        return check(_build(Config, data))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (YAML says keys are unique; PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise ConfigError(f"key '{key}' appears twice (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep)


def _parse_yaml(text: str):
    """Parses a config file's text; raises ConfigError for a duplicate key or a document that expands,
    through aliases, to more than MAX_NODES values (a "billion laughs" bomb)."""
    loader = _StrictLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        sizes: dict[int, int] = {}

        def size(node) -> int:  # memoized by node: an alias is the same node object, so this stays linear
            if id(node) not in sizes:
                sizes[id(node)] = 1  # a recursive alias counts once instead of looping
                children = node.value if isinstance(node.value, list) else []
                items = [n for pair in children for n in pair] if isinstance(node, yaml.MappingNode) else children
                sizes[id(node)] = min(1 + sum(size(n) for n in items), MAX_NODES + 1)
            return sizes[id(node)]

        if size(root) > MAX_NODES:
            raise ConfigError(f"expands to over {MAX_NODES} values through its aliases; expected a config file")
        return loader.construct_document(root)
    finally:
        loader.dispose()


def override(cfg: Config, **flags) -> Config:
    """Returns `cfg` with dotted keys replaced, e.g. `override(cfg, **{"tune.max_trials": 2})`.

    None values are ignored, so unset CLI flags leave the file's values. The result is checked (`check`).
    """
    for dotted, value in flags.items():
        if value is None:
            continue
        section, _, key = dotted.rpartition(".")
        if isinstance(value, bool) and section:  # `invert=True` from the API, spelled as the YAML file's `true`
            field = next((f for f in dataclasses.fields(getattr(cfg, section)) if f.name == key), None)
            if field is not None and "true" in field.metadata.get("limits", {}).get("choices", ()):
                value = "true" if value else "false"
        if section:
            sub = getattr(cfg, section)
            hint = typing.get_type_hints(type(sub))[key]
            cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(sub, **{key: _coerce(value, hint, dotted)})})
        else:
            cfg = dataclasses.replace(cfg, **{key: _coerce(value, typing.get_type_hints(Config)[key], key)})
    return check(cfg)


def to_dict(cfg: Config) -> dict:
    """The config as plain data, for the run record; a MySQL password is masked."""
    data = dataclasses.asdict(cfg)
    if data["metadata"]["mysql"] and data["metadata"]["mysql"]["password"]:
        data["metadata"]["mysql"]["password"] = MASKED
    return data


def to_yaml(cfg: Config) -> str:
    """The config as YAML that `load` reads back (with a section per component).

    Example:
        >>> load_text = to_yaml(override(Config(), **{"train.epochs": 3}))
        >>> "epochs: 3" in load_text
        True
    """
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value

    return yaml.safe_dump(plain(to_dict(cfg)), sort_keys=False)
