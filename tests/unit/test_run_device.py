"""RUN --device values, read as BuildKit's instructions.ParseDevice reads them, with its
messages at the Dockerfile line."""
from __future__ import annotations

import pytest

from builder.errors import ParseError
from builder.parse import parse_dockerfile
from builder.parse_typed import parse_device


@pytest.mark.parametrize(("value", "parsed"), [
    ("vendor.com/gpu=0", ("vendor.com/gpu=0", False)),  # a name may hold '=': CDI's kind=name
    ("vendor.com/gpu,required", ("vendor.com/gpu", True)),
    ("name=gpu,required=false", ("gpu", False)),
    ("gpu,required=T", ("gpu", True)),
    ("required,gpu", ("gpu", True)),
])
def test_values(value: str, parsed: tuple[str, bool]) -> None:
    assert parse_device(value) == parsed


@pytest.mark.parametrize(("value", "message"), [
    ("name=a,name=b", "device name already set to a"),
    ("a,b", "invalid field 'b' must be a key=value pair"),
    ("a,required=maybe", "invalid value for required: maybe"),
    ("a,nme=x", "unexpected key 'nme' in 'nme=x' (did you mean name?)"),
])
def test_errors_name_the_line(value: str, message: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_dockerfile(f"FROM scratch\nRUN --device={value} true\n")
    assert str(info.value) == f"Dockerfile:2: {message}"
