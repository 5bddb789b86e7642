"""The JSON plumbing of the OCI types: the one byte encoding, and checked field getters.

Garbage in a manifest or config becomes an ImageFormatError naming the field, never a
KeyError or TypeError from deep inside a caller.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from builder.digest import Digest
from builder.errors import RegistryError

__all__ = [
    "ImageFormatError",
    "decode",
    "encode",
    "extra_fields",
    "opt",
    "put",
    "req",
    "str_map",
    "strs",
    "to_digest",
    "typed",
]


class ImageFormatError(RegistryError):
    """A manifest, index or image config is not what the specs describe."""


# Outside strings JSON text has none of these characters, so they can be replaced anywhere.
_GO_ESCAPES = {ord(c): f"\\u{ord(c):04x}" for c in "<>&\u2028\u2029"}


def encode(obj: Mapping[str, Any]) -> bytes:
    """The single byte form of every manifest, index and config pybuild writes: compact, keys in
    the order given (the order Go's structs marshal in), UTF-8. Bytes that were not UTF-8 (a
    Dockerfile's, kept by Python as lone surrogates) become U+FFFD each, as Go's encoder
    writes them; and as Go's json.Marshal, `<`, `>`, `&`, U+2028 and U+2029 are escaped
    (a `<` is written as the six characters backslash, `u003c`)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).translate(_GO_ESCAPES)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        import re

        return re.sub("[\udc80-\udcff]", "\ufffd", text).encode("utf-8")


def decode(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageFormatError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ImageFormatError(f"{what} is not a JSON object")
    return obj


def typed(value: Any, typ: type, what: str) -> Any:
    if (typ is int and isinstance(value, bool)) or not isinstance(value, typ):
        raise ImageFormatError(f"{what} must be {_kind(typ)}, not {_kind(type(value))}")
    return value


def _kind(typ: type) -> str:
    return {dict: "an object", list: "an array", str: "a string", int: "an integer",
            bool: "a boolean", type(None): "null", float: "a number"}.get(typ, typ.__name__)


def req(obj: Mapping[str, Any], key: str, typ: type, what: str) -> Any:
    if key not in obj:
        raise ImageFormatError(f"{what}: missing required field {key!r}")
    return typed(obj[key], typ, f"{what}: field {key!r}")


def opt(obj: Mapping[str, Any], key: str, typ: type, what: str, default: Any) -> Any:
    value = obj.get(key)
    if value is None:
        return default
    return typed(value, typ, f"{what}: field {key!r}")


def strs(obj: Mapping[str, Any], key: str, what: str) -> tuple[str, ...]:
    items = opt(obj, key, list, what, [])
    for item in items:
        typed(item, str, f"{what}: items of {key!r}")
    return tuple(items)


def opt_strs(obj: Mapping[str, Any], key: str, what: str) -> tuple[str, ...] | None:
    """A string list where null/absent (None) differs from [] (Cmd, Entrypoint)."""
    if obj.get(key) is None:
        return None
    return strs(obj, key, what)


def str_map(obj: Mapping[str, Any], key: str, what: str) -> dict[str, str]:
    items = opt(obj, key, dict, what, {})
    for k, v in items.items():
        typed(v, str, f"{what}: {key}[{k!r}]")
    return dict(items)


def to_digest(value: Any, what: str) -> Digest:
    typed(value, str, what)
    try:
        return Digest.parse(value)
    except ValueError:
        raise ImageFormatError(f"{what} is not a digest: {value!r}") from None


def extra_fields(obj: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in known}


def put(out: dict[str, Any], key: str, value: Any) -> None:
    """Go's omitempty: skip "", 0, False, None and empty lists/maps; tuples become lists."""
    if value:
        out[key] = list(value) if isinstance(value, tuple) else value
