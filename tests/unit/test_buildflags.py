"""The `docker buildx build` flags for the build containers, parsed as buildx parses them
(builder.buildflags): what a good value becomes, and that a bad one is a usage error naming it."""
from __future__ import annotations

import pytest

from builder.buildflags import (
    GO_FALSE,
    parse_add_hosts,
    parse_annotations,
    parse_bytes,
    parse_ulimits,
)
from builder.errors import UsageError


@pytest.mark.parametrize("given, hosts", [
    (["myhost:192.168.0.1"], [("myhost", "192.168.0.1")]),
    (["myhost=192.168.0.1"], [("myhost", "192.168.0.1")]),
    (["myhost=[192.168.0.1]"], [("myhost", "192.168.0.1")]),
    (["host.and.domain.invalid:10.0.2.1"], [("host.and.domain.invalid", "10.0.2.1")]),
    (["anipv6host:2003:ab34:e::1"], [("anipv6host", "2003:ab34:e::1")]),
    (["anipv6host:[2003:ab34:e::1]"], [("anipv6host", "2003:ab34:e::1")]),
    (["anipv6host=[2003:ab34:e::1]"], [("anipv6host", "2003:ab34:e::1")]),
    (["ipv6local:::1"], [("ipv6local", "::1")]),
    (["ipv6local=[0:0:0:0:0:0:0:1]"], [("ipv6local", "::1")]),  # printed as Go prints it
    (["mapped=::ffff:10.0.0.1"], [("mapped", "10.0.0.1")]),
    (["DB.Example:10.0.0.1"], [("db.example", "10.0.0.1")]),  # lowercased, as BuildKit writes it
    (["a:10.0.0.1,b=10.0.0.2", "c:10.0.0.3"],  # comma-separated and repeated, in order
     [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]),
    (['"multi=10.0.0.1,10.0.0.2"'], [("multi", "10.0.0.1"), ("multi", "10.0.0.2")]),
    (["host.docker.internal:host-gateway"], [("host.docker.internal", "127.0.0.1")]),
    ([], []),
])
def test_add_host_values(given: list[str], hosts: list[tuple[str, str]]) -> None:
    assert parse_add_hosts(tuple(given)) == tuple(hosts)


@pytest.mark.parametrize("bad, named", [
    ("myhost:192.notanipaddress.1", "'192.notanipaddress.1' is not an IP address"),
    ("thathost-nosemicolon10.0.0.1", "expected HOST:IP or HOST=IP"),
    ("anipv6host:::::1", "'::::1' is not an IP address"),
    ("ipv6local:::0::", "'::0::' is not an IP address"),
    ("ipv6addr=[::1", "'[::1' is not an IP address"),
    ("ipv6addr=::1]", "'::1]' is not an IP address"),
    ("myhost.invalid:", "expected HOST:IP"),
    ("=10.0.0.1", "expected HOST:IP"),
    ("", "expected HOST:IP"),
    ("a=fe80::1%eth0", "is not an IP address"),
    ("a=010.0.0.1", "is not an IP address"),  # Go refuses leading zeros too
])
def test_bad_add_host_is_a_usage_error_naming_it(bad: str, named: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_add_hosts(("ok:10.0.0.1", bad))
    assert caught.value.exit_code == 2
    assert f"invalid --add-host {bad!r}" in caught.value.message
    assert named in caught.value.message


@pytest.mark.parametrize("given, size", [
    ("128m", 128 << 20), ("2g", 2 << 30), ("2G", 2 << 30), ("64MiB", 64 << 20), ("64mb", 64 << 20),
    ("1.5g", 3 << 29), ("1024", 1024), ("512 k", 512 << 10), ("1p", 1 << 50), ("0", 0),
])
def test_sizes_as_docker_reads_them(given: str, size: int) -> None:
    assert parse_bytes(given, "--shm-size") == size


@pytest.mark.parametrize("bad", ["", "m", "-1m", "12x", "1.2.3m", "1e3", "64 mb b", "0x10"])
def test_bad_size_is_a_usage_error_naming_it(bad: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_bytes(bad, "--shm-size")
    assert caught.value.exit_code == 2
    assert caught.value.message.startswith(f"invalid --shm-size {bad!r}")


@pytest.mark.parametrize("given, limits", [
    (["nofile=1024:2048"], [("nofile", 1024, 2048)]),
    (["nproc=512"], [("nproc", 512, 512)]),  # the hard limit defaults to the soft one
    (["core=-1"], [("core", -1, -1)]), (["stack=8192:-1"], [("stack", 8192, -1)]),
    (["nproc=1", "nofile=10:20", "nproc=+2"], [("nofile", 10, 20), ("nproc", 2, 2)]),  # sorted, last wins
    ([], []),
])
def test_ulimit_values(given: list[str], limits: list[tuple[str, int, int]]) -> None:
    assert parse_ulimits(tuple(given)) == tuple(limits)


@pytest.mark.parametrize("bad, named", [
    ("nofile", "expected NAME=SOFT[:HARD]"),
    ("files=10", "unknown limit 'files'"),
    ("as=10", "unknown limit 'as'"),  # docker leaves it out too
    ("NOFILE=10", "unknown limit 'NOFILE'"),
    ("nofile=ten", "'ten' is not an integer"),
    ("nofile=10:", "'' is not an integer"),
    ("nofile=1.5", "'1.5' is not an integer"),
    ("nofile=99999999999999999999", "is not an integer"),
    ("nofile=1:2:3", "at most two values"),
    ("nofile=2048:1024", "the soft limit must not exceed the hard limit"),
    ("nofile=-1:1024", "the soft limit must not exceed the hard limit"),
])
def test_bad_ulimit_is_a_usage_error_naming_it(bad: str, named: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_ulimits(("nproc=10", bad))
    assert caught.value.exit_code == 2
    assert caught.value.message.startswith(f"invalid --ulimit {bad!r}")
    assert named in caught.value.message


HOST = "linux/arm64/v8"


@pytest.mark.parametrize("given, manifest, descriptor", [
    (["org.opencontainers.image.source=https://x/y"], {"org.opencontainers.image.source": "https://x/y"}, {}),
    (["manifest:k=a=b,c"], {"k": "a=b,c"}, {}),  # the value is everything after the first =
    (["manifest-descriptor:k=v"], {}, {"k": "v"}),
    (["manifest,manifest-descriptor:k=v"], {"k": "v"}, {"k": "v"}),
    (["manifest[linux/arm64/v8]:k=v", "manifest[linux/arm64]:j=w"], {"k": "v", "j": "w"}, {}),
    (["manifest:com.example:sub=v"], {"com.example:sub": "v"}, {}),  # the type ends at the first :
    (["k=1", "k=2", ""], {"k": "2"}, {}),  # the last wins; an empty value is skipped, as buildx does
    (["k="], {"k": ""}, {}),
])
def test_annotation_values(given: list[str], manifest: dict, descriptor: dict) -> None:
    got = parse_annotations(tuple(given), [HOST], makes_index=False)
    assert (got.manifest, got.descriptor, got.index, got.index_descriptor, got.by_platform) == \
        (manifest, descriptor, {}, {}, {})


def test_index_and_per_platform_annotations_of_a_build_that_makes_an_index() -> None:
    got = parse_annotations(("index:i=1", "index-descriptor:d=2", "manifest,index:both=3",
                             "manifest[linux/arm64]:arm=4", "manifest-descriptor[linux/amd64]:amd=5",
                             "manifest-descriptor:all=6"),
                            ["linux/amd64", "linux/arm64/v8"], makes_index=True)
    assert got.index == {"i": "1", "both": "3"} and got.index_descriptor == {"d": "2"}
    assert got.manifest == {"both": "3"} and got.descriptor == {"all": "6"}
    assert got.by_platform == {"linux/arm64/v8": ({"arm": "4"}, {}), "linux/amd64": ({}, {"amd": "5"})}
    # one platform with provenance: scoped ones are that image's own
    one = parse_annotations(("manifest[linux/arm64]:k=v", "index:i=1"), [HOST], makes_index=True)
    assert one.manifest == {"k": "v"} and one.index == {"i": "1"} and one.by_platform == {}


@pytest.mark.parametrize("bad, named", [
    ("novalue", "expected KEY=VALUE"),
    ("=v", "the key must be a word"),
    ("manifest:=v", "the key must be a word"),
    ("a key=v", "the key must be a word"),
    ("index:k=v", "index annotations not supported for single platform export"),
    ("manifest,index-descriptor:k=v", "index annotations not supported for single platform export"),
    ("Manifest:k=v", "'Manifest' is not a type"),
    ("layer:k=v", "unknown annotation type 'layer'"),
    ("manifest[linux/amd64]:k=v", "this build makes no linux/amd64 image"),
    ("manifest[linux amd64]:k=v", "is not a type with an optional [platform]"),
])
def test_bad_annotation_is_a_usage_error_naming_it(bad: str, named: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_annotations(("ok=1", bad), [HOST], makes_index=False)
    assert caught.value.exit_code == 2
    assert repr(bad) in caught.value.message
    assert named in caught.value.message


def test_the_replay_takes_the_same_false_words() -> None:
    from builder import warm

    assert warm._OFF_VALUES["provenance"] == GO_FALSE | {""} == warm._OFF_VALUES["sbom"]
