"""Configuration plumbing (torch-free): defaults → optional TOML file → command-line overrides."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from mtl.device_runtime.files import read_regular
from mtl.pipeline.errors import ConfigError

T = TypeVar("T")


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML config file; a missing or malformed file raises `ConfigError` naming it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    data = read_regular(path, 1 << 20, "config file", ConfigError)
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
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
    hints = typing.get_type_hints(cls)
    for key, value in overrides.items():
        if value is None:
            continue
        if typing.get_origin(hints.get(key)) is dict and isinstance(values.get(key), dict):
            value = {**values[key], **value}  # a table: the command line adds to (or replaces keys of) the file's
        values[key] = value
    where = f"config file {toml_path}: " if toml_path is not None else ""
    for key, value in list(values.items()):
        values[key] = _typed(key, value, hints[key], where)
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None


def _typed(key: str, value: Any, hint: Any, where: str) -> Any:
    """`value` checked against the field's annotation (int, float, bool, str, X | None, tuple[float, ...]), so a
    TOML `batch_size = 64.0` or `lr = "fast"` fails here, naming the key, instead of deep inside a run."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is type(None):
            continue
        if typing.get_origin(option) is tuple and isinstance(value, list | tuple):
            inner = typing.get_args(option)
            if (len(inner) == 2 and inner[1] is Ellipsis) or len(inner) == len(value):
                kinds = [inner[0]] * len(value) if inner[-1] is Ellipsis else list(inner)
                if all(_fits(v, k) for v, k in zip(value, kinds, strict=True)):
                    return tuple(float(v) if k is float else v for v, k in zip(value, kinds, strict=True))
        elif _fits(value, option):
            return float(value) if option is float else value
    raise ConfigError(f"{where}{key} must be {_describe(options)}, got {type(value).__name__} {value!r:.60}")


def parse_value(label: str, value: Any, hint: Any) -> Any:
    """A value for a field annotated `hint`: a string from the command line (`--option beta=0.3`) is parsed as
    the field's type (true/false, a whole number, a number, text); anything else is checked as `_typed` does."""
    if isinstance(value, str) and hint is not str:
        text = value.strip()
        for kind in typing.get_args(hint) or (hint,):
            try:
                if kind is bool and text.lower() in ("true", "false", "yes", "no", "1", "0"):
                    return text.lower() in ("true", "yes", "1")
                if kind is int:
                    return int(text)
                if kind is float:
                    return float(text)
            except ValueError:
                continue
    return _typed(label, value, hint, "")


def _fits(value: Any, kind: Any) -> bool:
    if typing.get_origin(kind) is dict:
        return isinstance(value, dict)
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, kind) if isinstance(kind, type) else True


def _describe(options: tuple[Any, ...]) -> str:
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
             dict: "a table of KEY = VALUE"}
    parts = []
    for option in options:
        if option is type(None):
            continue
        if typing.get_origin(option) is tuple:
            parts.append(f"a list of {len(typing.get_args(option))} numbers")
        elif typing.get_origin(option) is dict:
            parts.append(names[dict])
        else:
            parts.append(names.get(option, getattr(option, "__name__", str(option))))
    return " or ".join(parts)


def option_defaults(config_cls: type) -> dict[str, Any]:
    """JSON-ready defaults of a config dataclass's options (those with a default), as `config_to_dict` writes them."""
    out = {}
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass (tuples become lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}
