"""Settings declared once as frozen dataclasses of `param`s: defaults, limits, help and flags; config trees are built from them."""
from __future__ import annotations

import dataclasses
import operator
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from engine.errors import ConfigError

_shown = reprlib.Repr()
_shown.maxstring, _shown.maxother, _shown.maxlist, _shown.maxtuple, _shown.maxdict = 60, 60, 6, 6, 6
RUN = "run"  # the commands that run the pipeline (`run`, `step`, `kfp`, the API's `run`) take every flag


@dataclass(frozen=True)
class Param:
    """What a setting declares beyond its default: the values it allows, its help and its flag.

    `limits`: `choices`, `low` (at least), `above`, `high` (at most), `below`, `prefix` (each item of a list
    of strings starts with it), `pattern` (a regular expression the whole string matches, and how the error
    says what it allows). `flag`: the command-line flag that sets it (None: YAML only); `switch`: the
    flag takes no value and sets the value given; `parse`: turns the flag's text into the value (a duration);
    `commands`: the commands besides the run commands that take the flag (`validate`, `drift`); `valid`: raises
    ConfigError for a value the limits cannot describe (a dataset spec's syntax), checked with them.
    """

    help: str = ""
    flag: str | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    switch: Any = None
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None
    commands: tuple[str, ...] = ()
    default_help: str | None = None  # how `--help` states a default computed elsewhere
    valid: Callable[[Any], Any] | None = None


def param(default: Any = None, *, help: str = "", flag: str | None = None, switch: Any = None,
          parse: Callable[[str], Any] | None = None, metavar: str | None = None, commands: tuple[str, ...] = (),
          default_help: str | None = None, choices: tuple | None = None, low: float | None = None,
          above: float | None = None, high: float | None = None, below: float | None = None,
          prefix: str | None = None, pattern: tuple[str, str] | None = None,
          valid: Callable[[Any], Any] | None = None):
    """A setting of a component (or of the whole pipeline): a dataclass field that carries its `Param`.

    None, where the type allows it, always passes the limits.

    Example:
        >>> @dataclass(frozen=True)
        ... class Demo:
        ...     rate: float = param(0.1, above=0, below=1, flag="--rate", help="a rate")
        >>> check(Demo(rate=2.0))
        Traceback (most recent call last):
        engine.errors.ConfigError: config 'rate': expected a number more than 0 and less than 1, got 2.0
    """
    limits = {k: v for k, v in (("choices", choices), ("low", low), ("above", above), ("high", high),
                                ("below", below), ("prefix", prefix), ("pattern", pattern)) if v is not None}
    declared = Param(help=help, flag=flag, limits=limits, switch=switch, parse=parse, metavar=metavar,
                     commands=commands, default_help=default_help, valid=valid)
    return field(default=default, metadata={"param": declared, "limits": limits})


def declaration(f: dataclasses.Field) -> Param:
    """The `Param` of a dataclass field (an undeclared field has no limits, help or flag)."""
    return f.metadata.get("param", Param())


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `90s`, `10m` or `1.5h`; a number without its unit is refused, so that
    `--budget 5` is never taken for 5 seconds when 5 minutes were meant.

    Example:
        >>> parse_duration("10m")
        600.0
        >>> parse_duration("5")
        Traceback (most recent call last):
        engine.errors.ConfigError: duration '5' has no unit: add s, m or h, e.g. 5m
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match or float(match[1]) <= 0:
        raise ConfigError(f"duration '{text}': expected a positive number with s, m or h, e.g. 10m")
    if not match[2]:
        raise ConfigError(f"duration '{text}' has no unit: add s, m or h, e.g. {match[1]}m")
    return float(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]]


# Each limit: the test a value must pass, and how the error says it.
LIMITS = {
    "choices": (lambda value, bound: value in bound, lambda bound: "one of " + ", ".join(map(str, bound))),
    "low": (operator.ge, "at least {}".format),
    "above": (operator.gt, "more than {}".format),
    "high": (operator.le, "at most {}".format),
    "below": (operator.lt, "less than {}".format),
    "prefix": (lambda value, bound: all(str(v).startswith(bound) for v in value),
               lambda bound: f"options that start with {bound!r}"),
    "pattern": (lambda value, bound: re.fullmatch(bound[0], value) is not None, lambda bound: bound[1]),
}


def _expected(limits: dict, hint) -> str:
    said = " and ".join(LIMITS[name][1](bound) for name, bound in limits.items())
    ranged = {"low", "above", "high", "below"} & set(limits)
    return f"{'an integer' if hint is int else 'a number'} {said}" if ranged else said


def _allowed(value: Any, limits: dict) -> bool:
    return value is None or all(LIMITS[name][0](value, bound) for name, bound in limits.items())


def _plain(hint):
    """The type a hint allows besides None (`float | None` is float)."""
    return next((a for a in typing.get_args(hint) if a is not type(None)), hint)


def check(cfg, where: str = ""):
    """Returns `cfg` when every key holds a value its setting allows (recursively), else raises ConfigError
    naming the key, the value and what is allowed. Called whenever config and flags are read, so a bad
    value stops a run before anything runs."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{where}.{f.name}" if where else f.name
        limits = declaration(f).limits
        if dataclasses.is_dataclass(value):
            check(value, key)
        elif not _allowed(value, limits):
            raise ConfigError(f"config '{key}': expected {_expected(limits, _plain(hints[f.name]))}, "
                              f"got {_shown.repr(value)}")
        elif value is not None and declaration(f).valid:
            declaration(f).valid(value)
    return cfg


def coerce(value, hint, where: str):
    """`value` checked against a type hint (lists become tuples, a mapping becomes its section); raises
    ConfigError naming `where`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return coerce(value, _plain(hint), where)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"config '{where}': expected a section (mapping), got {_shown.repr(value)}")
        return build(hint, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config '{where}': expected a list, got {_shown.repr(value)}")
        return tuple(coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    ok = (isinstance(value, hint) and not (hint is int and isinstance(value, bool))
          or hint is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        raise ConfigError(f"config '{where}': expected {hint.__name__}, got {type(value).__name__} "
                          f"{_shown.repr(value)}")
    return float(value) if hint is float else value


def _spelled(value, f: dataclasses.Field):
    """YAML and Python read `true` as a boolean: where "true" and "false" are choices, it is their spelling."""
    if isinstance(value, bool) and "true" in declaration(f).limits.get("choices", ()):
        return "true" if value else "false"
    return value


def build(cls, data: dict, where: str = ""):
    """An instance of the settings class `cls` from plain data (a YAML section), every value checked."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        name = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"config: unknown key '{name}'; known keys{' in ' + where if where else ''}: "
                          f"{', '.join(sorted(fields))}")
    return cls(**{k: coerce(_spelled(v, fields[k]), hints[k], f"{where}.{k}" if where else k)
                  for k, v in data.items()})


def override(cfg, **values):
    """`cfg` with dotted keys replaced, e.g. `override(cfg, **{"tune.max_epochs": 2})`; None values are
    ignored, so unset flags keep the file's values. The result is checked (`check`)."""
    for dotted, value in values.items():
        if value is None:
            continue
        section, _, key = dotted.rpartition(".")
        owner = getattr(cfg, section) if section else cfg
        f = next((f for f in dataclasses.fields(owner) if f.name == key), None)
        if f is None:
            raise ConfigError(f"config: unknown key '{dotted}'")
        value = coerce(_spelled(value, f), typing.get_type_hints(type(owner))[key], dotted)
        cfg = (dataclasses.replace(cfg, **{section: dataclasses.replace(owner, **{key: value})}) if section
               else dataclasses.replace(cfg, **{key: value}))
    return check(cfg)


def settings(cls, where: str = "") -> Iterator[tuple[str, dataclasses.Field, type]]:
    """Every setting of a config tree as (dotted key, field, the type it holds besides None), depth first in
    declaration order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key, hint = f"{where}.{f.name}" if where else f.name, _plain(hints[f.name])
        if dataclasses.is_dataclass(hint) and "param" not in f.metadata:
            yield from settings(hint, key)
        else:
            yield key, f, hint


def default(cls, key: str):
    """The default of a dotted key of the config tree `cls`."""
    value = cls()
    for part in key.split("."):
        value = getattr(value, part)
    return value


def allowed(cls, key: str) -> tuple:
    """The values a dotted key of the config tree `cls` allows when it is a choice."""
    return next(declaration(f).limits["choices"] for k, f, _ in settings(cls) if k == key)


def tree(name: str, head: type, sections: dict[str, type], tail: type | None = None,
         namespace: dict[str, Any] | None = None) -> type:
    """A frozen config class: the settings of `head`, one section per entry of `sections` (a node's section
    name: its settings class), then the settings of `tail`; `namespace` adds properties.

    Example:
        >>> @dataclass(frozen=True)
        ... class Run:
        ...     seed: int = param(42, low=0, flag="--seed")
        >>> @dataclass(frozen=True)
        ... class Card:
        ...     title: str = param("untitled", flag="--card-title")
        >>> Tree = tree("Tree", Run, {"card": Card})
        >>> Tree(), [key for key, _, _ in settings(Tree)]
        (Tree(seed=42, card=Card(title='untitled')), ['seed', 'card.title'])
    """
    def own(cls):
        if cls is None:
            return []
        hints = typing.get_type_hints(cls)
        return [(f.name, hints[f.name], field(default_factory=f.default_factory, metadata=f.metadata)
                 if f.default_factory is not dataclasses.MISSING else field(default=f.default, metadata=f.metadata))
                for f in dataclasses.fields(cls)]

    body = [(key, cls, field(default_factory=cls)) for key, cls in sections.items()]
    return dataclasses.make_dataclass(name, own(head) + body + own(tail), frozen=True,
                                      namespace={"__doc__": head.__doc__, **(namespace or {})})
