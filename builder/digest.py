"""The Digest value type, streaming sha256 of bytes, files and streams, and canonical JSON."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable

__all__ = ["Digest", "sha256_bytes", "sha256_file", "sha256_stream", "canonical_json", "json_utf8"]

_HEX = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    """A content digest such as ``sha256:ab12...``. Only sha256 is produced; others parse."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> "Digest":
        algo, sep, hexpart = text.partition(":")
        if not sep or not algo or not hexpart:
            raise ValueError(f"not a digest: {text!r}")
        if algo == "sha256" and not _HEX.match(hexpart):
            raise ValueError(f"not a sha256 digest: {text!r}")
        return cls(algo, hexpart)

    @classmethod
    def sha256(cls, hexpart: str) -> "Digest":
        return cls("sha256", hexpart)

    @property
    def short(self) -> str:
        return self.hex[:12]

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def sha256_bytes(data: bytes) -> Digest:
    return Digest.sha256(hashlib.sha256(data).hexdigest())


def sha256_stream(stream: IO[bytes] | Iterable[bytes]) -> tuple[Digest, int]:
    """Digest and size of a stream, read in chunks so memory stays flat."""
    h = hashlib.sha256()
    size = 0
    if hasattr(stream, "read"):
        reader = stream.read  # type: ignore[union-attr]
        while chunk := reader(CHUNK):
            h.update(chunk)
            size += len(chunk)
    else:
        for chunk in stream:
            h.update(chunk)
            size += len(chunk)
    return Digest.sha256(h.hexdigest()), size


def sha256_file(path: str | Path) -> tuple[Digest, int]:
    with open(path, "rb") as f:
        return sha256_stream(f)


# json.dumps with these options builds a new encoder on every call; one made once gives
# the same bytes (keys hash these bytes: they must never change).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys, no insignificant whitespace, UTF-8: the form keys and configs are hashed in."""
    return json_utf8(_CANONICAL.encode(value))


def json_utf8(text: str) -> bytes:
    """JSON text as UTF-8. A file name that is not UTF-8 reaches Python as lone surrogates,
    which UTF-8 cannot carry: each is written as the JSON escape ``\\udcXX`` (backslashreplace
    writes exactly that), which reads back as the same name. Other text is unchanged."""
    return text.encode("utf-8", "backslashreplace")
