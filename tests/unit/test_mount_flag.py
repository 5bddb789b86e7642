"""`RUN --mount` values are read and checked as BuildKit's parseMount reads them."""
from __future__ import annotations

import pytest

from builder.errors import BuildError
from builder.parse_go import ram_in_bytes
from builder.steps import parse_mount_flag


@pytest.mark.parametrize("spec, want", [
    ("target=/x", {"type": "bind", "target": "/x"}),
    ("type=CACHE,dst=/c,readonly", {"type": "cache", "target": "/c", "ro": "true"}),
    ("type=cache,destination=/c,rw,id=pip,sharing=Locked,mode=0750,uid=1000,gid=0",
     {"type": "cache", "target": "/c", "ro": "false", "id": "pip", "sharing": "locked",
      "mode": "0750", "uid": "1000", "gid": "0"}),
    ("type=bind,src=a,target=/a,readwrite=true", {"type": "bind", "source": "a", "target": "/a", "ro": "false"}),
    ("type=bind,source=a,target=/a,ro=F", {"type": "bind", "source": "a", "target": "/a", "ro": "false"}),
    ("type=secret,id=tok,required", {"type": "secret", "id": "tok", "required": "true"}),
    ("type=ssh,required=0", {"type": "ssh", "required": "false"}),
    ("type=tmpfs,target=/t,size=64m", {"type": "tmpfs", "target": "/t", "size": "64m"}),
    ('type=bind,"target=/a,b"', {"type": "bind", "target": "/a,b"}),
])
def test_accepted(spec: str, want: dict[str, str]) -> None:
    assert parse_mount_flag(spec) == want


@pytest.mark.parametrize("spec, message", [
    ("type=bogus,target=/x", "unsupported mount type 'bogus'"),
    ("type=cache,target=/c,uid=abc", "invalid value abc for uid"),
    ("type=cache,target=/c,gid=-1", "invalid value -1 for gid"),
    ("type=cache,target=/c,mode=0999", "invalid value 0999 for mode"),
    ("type=cache,target=/c,uid=4294967296", "invalid value 4294967296 for uid"),
    ("type=cache,target=/c,ro=maybe", "invalid value for ro: maybe"),
    ("type=cache,target=/c,sharing=sometimes", "unsupported sharing value 'sometimes'"),
    ("type=cache,target=/c,size=1g", "unexpected key 'size' for mount type 'cache'"),
    ("type=tmpfs,target=/t,size=lots", "invalid value for size: lots"),
    ("type=tmpfs,target=/t,size=1.2.3g", "invalid value for size: 1.2.3g"),
    ("type=cache,target=/c,required", "unexpected key 'required' for mount type 'cache'"),
    ("type=cache,target=/c,colour=red", "unexpected key 'colour' in 'colour=red'"),
    ("type=cache,target=/c,nocopy", "invalid field 'nocopy' must be a key=value pair"),
    ("type=bind,from=$STAGE,target=/x", "'from' doesn't support variable expansion"),
    # a secret's own checks come first, in BuildKit's order
    ("type=secret,id=a,sharing=shared", "secret mount should not define sharing"),
    ("type=secret,id=a,sharing=shared,from=x", "secret mount should not have a from"),
    ("type=secret,env=X", "invalid secret mount. one of source, target required"),
    ("type=secret,id=a,src=b", "both source and id can't be set"),
    ("type=ssh,sharing=locked", "invalid cache sharing set for ssh mount"),
])
def test_refused_with_buildkits_words(spec: str, message: str) -> None:
    with pytest.raises(BuildError) as err:
        parse_mount_flag(spec)
    assert message in str(err.value)


def test_values_are_expanded_before_they_are_checked() -> None:
    env = {"$U": "1000", "$DIR": "/cache"}
    got = parse_mount_flag("type=cache,target=$DIR,uid=$U", lambda v: env.get(v, v))
    assert got == {"type": "cache", "target": "/cache", "uid": "1000"}
    with pytest.raises(BuildError, match="invalid value x for uid"):
        parse_mount_flag("type=cache,target=/c,uid=$U", lambda v: "x" if v == "$U" else v)


@pytest.mark.parametrize("text, size", [("512", 512), ("64m", 64 << 20), ("1.5g", 3 << 29),
                                        ("2 KiB", 2048), ("1TB", 1 << 40), ("x", None), ("", None)])
def test_tmpfs_sizes(text: str, size: int | None) -> None:
    assert ram_in_bytes(text) == size
