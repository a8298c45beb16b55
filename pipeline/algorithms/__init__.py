"""The algorithm registry: one module per meta-learning method in this package, each registering one class.

`algorithm_names()` lists the methods WITHOUT importing them (nor torch): a method's name is its module's name
(`meta_lstm.py` → "meta-lstm"), which `register_algorithm` checks, so the CLI can offer the choices on a device
install. `get_algorithm(name)` imports the module and returns its registered instance; `list_algorithms()`
imports them all. Adding a method is adding a module here (and its test, and a README row).
"""

from __future__ import annotations

import pkgutil
from importlib import import_module
from typing import TYPE_CHECKING, TypeVar

from mtl.pipeline.errors import ConfigError

if TYPE_CHECKING:
    from mtl.pipeline.meta.algorithm import Algorithm

_REGISTRY: dict[str, Algorithm] = {}
A = TypeVar("A", bound=type)


def _module_name(name: str) -> str:
    return name.replace("-", "_")


def algorithm_names() -> list[str]:
    """Every method's name, from the modules of this package (nothing is imported), in name order."""
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def register_algorithm(cls: A) -> A:
    """Class decorator: register one instance of an `Algorithm` subclass under `cls.name`. A second class for the
    same name, or a name that is not its module's, is refused (a programming error, said at import)."""
    name = cls.name
    module = cls.__module__.rpartition(".")[2]
    if module != _module_name(name):
        raise TypeError(f"algorithm {name!r} must be defined in a module named {_module_name(name)}.py, "
                        f"not {module}.py (names are found from the module files)")
    if name in _REGISTRY and type(_REGISTRY[name]) is not cls:
        raise ConfigError(f"algorithm {name!r} is already registered (by {type(_REGISTRY[name]).__qualname__})")
    _REGISTRY[name] = cls()
    return cls


def get_algorithm(name: str) -> Algorithm:
    """The method registered as `name`; an unknown name lists the valid ones."""
    if name not in _REGISTRY:
        if not isinstance(name, str) or name not in algorithm_names():
            raise ConfigError(f"unknown algorithm {name!r}; choose from {', '.join(algorithm_names())}")
        import_module(f"{__name__}.{_module_name(name)}")
        if name not in _REGISTRY:
            raise TypeError(f"module {_module_name(name)}.py registers no algorithm named {name!r}")
    return _REGISTRY[name]


def list_algorithms() -> list[str]:
    """Every registered method (all modules imported), in name order."""
    return [get_algorithm(name).name for name in algorithm_names()]


__all__ = ["algorithm_names", "get_algorithm", "list_algorithms", "register_algorithm"]
