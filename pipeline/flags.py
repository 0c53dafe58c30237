"""Command-line flags and the API's keywords, derived from the settings the config tree declares (`engine.settings.param`)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.settings import RUN, declaration, default, override, settings
from pipeline import config


def declared(cls: type = config.Config, command: str = RUN) -> list[tuple[str, str, Any]]:
    """The flags `command` takes, as (flag, dotted key, Param), in the config tree's order: the run commands
    take every flag; `validate` and `drift` those whose settings name them.

    Example:
        >>> len(declared()) > len(declared(command="drift")) > 0
        True
    """
    found = []
    for key, f, _ in settings(cls):
        p = declaration(f)
        if p.flag and (command == RUN or command in p.commands):
            found.append((p.flag, key, p))
    return found


def keyword(flag: str) -> str:
    """The API keyword and argparse destination of a flag: `--max-epochs` is `max_epochs`."""
    return flag[2:].replace("-", "_")


def help_text(p, value: Any) -> str:
    """A flag's help, ending with its default (the declared `default_help`, else the default's value)."""
    if "(default" in p.help:
        return p.help
    shown = p.default_help or ("off" if isinstance(value, bool) else value)
    return f"{p.help} (default: {shown})"


def _typed(parse):
    def convert(text: str):
        try:
            return parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def add(parser: argparse.ArgumentParser, cls: type = config.Config, command: str = RUN) -> None:
    """Adds the flags of `command` to `parser`, with help, choices, types and metavars from the settings."""
    hints = {key: hint for key, _, hint in settings(cls)}
    for flag, key, p in declared(cls, command):
        text = help_text(p, default(cls, key))
        if p.switch is not None:
            parser.add_argument(flag, action="store_true", help=text)
            continue
        options: dict[str, Any] = {"help": text}
        if "choices" in p.limits:
            options["choices"] = p.limits["choices"]
        else:
            options["metavar"] = p.metavar or keyword(flag).upper()
            kind = _typed(p.parse) if p.parse else hints[key] if hints[key] in (int, float) else None
            if kind:
                options["type"] = kind
        parser.add_argument(flag, **options)


def run_config(path: str | Path | None, root: str | Path | None, beam_args, cls: type = config.Config,
               command: str = RUN, **values):
    """The config of a run: the YAML file at `path` (None: the defaults), then the values of the flags
    named as the API's keywords are (`max_epochs` for `--max-epochs`, `no_tune=True`); None or False keeps
    the file's.

    Raises:
        ConfigError: a name is not a flag's, or a value is not allowed.

    Example:
        >>> run_config(None, "/tmp/root", None, max_epochs=1).tune.max_epochs
        1
    """
    by_name = {keyword(flag): (key, p) for flag, key, p in declared(cls, command)}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        raise ConfigError(f"unknown argument '{unknown[0]}'; expected one of {', '.join(sorted(by_name))}")
    overrides = {}
    for name, value in values.items():
        key, p = by_name[name]
        if p.switch is not None:
            value = p.switch if value else None
        elif isinstance(value, str) and p.parse:
            value = p.parse(value)
        overrides[key] = value
    return override(config.load(path, cls), root=str(root) if root else None,
                    **{"statistics.beam_args": tuple(beam_args) if beam_args else None}, **overrides)


def check_config(root: str | Path | None, beam_args, command: str, schema: str | None = None, **values):
    """The config of a check (`validate`, `drift`, `schema`, `predict`): the defaults, the root, Beam options,
    a schema file, and the settings flags `command` takes (others are refused as `run_config` refuses them)."""
    cfg = run_config(None, root, beam_args, command=command, **values)
    return override(cfg, **{"schema.schema_file": schema})


def from_args(args, cls: type = config.Config, command: str = RUN) -> dict[str, Any]:
    """The values of `command`'s flags in parsed arguments, by keyword."""
    return {keyword(flag): getattr(args, keyword(flag)) for flag, _, _ in declared(cls, command)}
