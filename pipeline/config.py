"""Configuration plumbing (torch-free): defaults → optional TOML file → command-line overrides."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pipeline.errors import ConfigError

T = TypeVar("T")


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML config file; a missing or malformed file raises `ConfigError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def resolve_config(cls: type[T], toml_path: str | Path | None = None, **overrides: Any) -> T:
    """Build the frozen config `cls` from its defaults, a TOML file, then non-None overrides."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    if toml_path is not None:
        table = read_toml(toml_path)
        unknown = sorted(set(table) - names)
        if unknown:
            raise ConfigError(f"config file {toml_path}: unknown key(s) {', '.join(unknown)}; "
                              f"valid keys: {', '.join(sorted(names))}")
        values.update(table)
    values.update({k: v for k, v in overrides.items() if v is not None})
    for key, value in list(values.items()):
        if isinstance(value, list):
            values[key] = tuple(value)
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass (tuples become lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}
