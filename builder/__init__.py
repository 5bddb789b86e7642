"""pybuild: build OCI images from Dockerfiles without a daemon.

The public Python API. Heavy parts load on first use, so that importing the package
(and `pybuild --help`) stays fast::

    from builder import BuildRequest, build, parse_dockerfile
    result = build(BuildRequest(context="app", tags=("app:1",)))
"""
from __future__ import annotations

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing: a replay never needs it

if TYPE_CHECKING:
    from typing import Any

    from .errors import (
        BuildError,
        CacheError,
        ContextError,
        ExecError,
        ExpandError,
        GraphError,
        LayerError,
        ParseError,
        RegistryError,
        SourceRange,
        UsageError,
    )
    from .build import BuildRequest, BuildResult
    from .build import run_build as build
    from .parse import parse_dockerfile

__all__ = [
    "BuildError",
    "BuildRequest",
    "BuildResult",
    "CacheError",
    "ContextError",
    "ExecError",
    "ExpandError",
    "GraphError",
    "LayerError",
    "ParseError",
    "RegistryError",
    "SourceRange",
    "UsageError",
    "build",
    "parse_dockerfile",
]
__version__ = "0.1.0"

_ERRORS = ("BuildError", "CacheError", "ContextError", "ExecError", "ExpandError", "GraphError",
           "LayerError", "ParseError", "RegistryError", "SourceRange", "UsageError")
# Nothing is imported with the package itself (not even dataclasses): `pybuild --help`
# pays only for what it uses.
_LAZY = {name: ("builder.errors", name) for name in _ERRORS} | {
    "build": ("builder.build", "run_build"),
    "BuildRequest": ("builder.build", "BuildRequest"),
    "BuildResult": ("builder.build", "BuildResult"),
    "parse_dockerfile": ("builder.parse", "parse_dockerfile"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        from . import codecache

        codecache.install()

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'builder' has no attribute {name!r}")
