"""A config tree read from, and written as, YAML: safe loading that refuses duplicate keys, alias bombs and huge files."""
from __future__ import annotations

from pathlib import Path

import yaml

from engine.errors import ConfigError, first_line
from engine.settings import build, check

MAX_FILE_BYTES = 1 << 20  # a config file is a few hundred bytes: anything over a MiB is not one
MAX_NODES = 10_000  # YAML values, counted with aliases expanded: a bomb of nested aliases stops here


def load(cls, path: str | Path | None):
    """The config tree `cls` from a YAML file with a section per component; None gives the defaults.

    Raises:
        ConfigError: the file is missing, not YAML, nested thousands deep, or has an unknown key or a wrongly
            typed value.
    """
    if path is None:
        return cls()
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
    except RecursionError:  # thousands of nested lists or mappings: the parser's recursion gives out
        raise ConfigError(f"{path}: nested too deeply to read; expected a config file of a few sections") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    try:
        return check(build(cls, data))
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


def dump(data: dict) -> str:
    """Plain config data as YAML that `load` reads back, sections in their order."""
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value

    return yaml.safe_dump(plain(data), sort_keys=False)
