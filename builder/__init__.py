"""pybuild: build OCI images from Dockerfiles without a daemon."""
from __future__ import annotations

from .errors import BuildError, ParseError, SourceRange

__all__ = ["BuildError", "ParseError", "SourceRange"]
__version__ = "0.1.0"
