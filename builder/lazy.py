"""Package attributes loaded from their submodule on first use (PEP 562).

A package that re-exports its submodules' names would import all of them as soon as any
one is needed; every pybuild command starts a fresh interpreter, so each module loaded
for nothing costs every start. ``exports(package, homes)`` gives the package a module
``__getattr__`` that imports the submodule named in ``homes`` when a name is first asked
for, and then keeps the value in the package, so later lookups are plain attribute reads.
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["exports"]


def exports(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """The ``__getattr__`` of ``package``: ``homes`` maps each name to its submodule."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
