"""builder.reference.ImageRef: docker's normalisation of image references, case by case
(the cases of distribution/reference's normalize tests, restated as our own table)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.digest import Digest
from builder.reference import ImageRef, InvalidReference

D1 = "sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa"
D2 = "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c"
HEX64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"

# text -> (registry, repository, tag, digest, str(), familiar())
PARSE = [
    ("busybox", "docker.io", "library/busybox", "latest", None,
     "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io", "library/busybox", "1.36", None,
     "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("library/busybox", "docker.io", "library/busybox", "latest", None,
     "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/busybox", "docker.io", "library/busybox", "latest", None,
     "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/library/busybox:latest", "docker.io", "library/busybox", "latest", None,
     "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/library/debian", "docker.io", "library/debian", "latest", None,
     "docker.io/library/debian:latest", "debian:latest"),
    ("index.docker.io/debian", "docker.io", "library/debian", "latest", None,
     "docker.io/library/debian:latest", "debian:latest"),
    ("user/app:v1", "docker.io", "user/app", "v1", None, "docker.io/user/app:v1", "user/app:v1"),
    ("docker.io/library/foo/bar", "docker.io", "library/foo/bar", "latest", None,
     "docker.io/library/foo/bar:latest", "library/foo/bar:latest"),
    ("store/foo/bar", "docker.io", "store/foo/bar", "latest", None,
     "docker.io/store/foo/bar:latest", "store/foo/bar:latest"),
    ("other/library", "docker.io", "other/library", "latest", None,
     "docker.io/other/library:latest", "other/library:latest"),
    ("ubuntu-12.04-base", "docker.io", "library/ubuntu-12.04-base", "latest", None,
     "docker.io/library/ubuntu-12.04-base:latest", "ubuntu-12.04-base:latest"),
    ("test_com/foo", "docker.io", "test_com/foo", "latest", None,
     "docker.io/test_com/foo:latest", "test_com/foo:latest"),
    # hosts: a dot, a port, "localhost", or capitals in the first element
    ("localhost/fooo", "localhost", "fooo", "latest", None,
     "localhost/fooo:latest", "localhost/fooo:latest"),
    ("localhost/fooo/bar", "localhost", "fooo/bar", "latest", None,
     "localhost/fooo/bar:latest", "localhost/fooo/bar:latest"),
    ("localhost:5000/x:1", "localhost:5000", "x", "1", None,
     "localhost:5000/x:1", "localhost:5000/x:1"),
    ("127.0.0.1:5000/x:1", "127.0.0.1:5000", "x", "1", None,
     "127.0.0.1:5000/x:1", "127.0.0.1:5000/x:1"),
    ("127.0.0.1:8000/private/moonbase", "127.0.0.1:8000", "private/moonbase", "latest", None,
     "127.0.0.1:8000/private/moonbase:latest", "127.0.0.1:8000/private/moonbase:latest"),
    ("example.com/privatebase", "example.com", "privatebase", "latest", None,
     "example.com/privatebase:latest", "example.com/privatebase:latest"),
    ("example.com:8000/private/moonbase", "example.com:8000", "private/moonbase", "latest", None,
     "example.com:8000/private/moonbase:latest", "example.com:8000/private/moonbase:latest"),
    ("test-com:8080/foo", "test-com:8080", "foo", "latest", None,
     "test-com:8080/foo:latest", "test-com:8080/foo:latest"),
    ("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo", "latest", None,
     "xn--n3h.com:18080/foo:latest", "xn--n3h.com:18080/foo:latest"),
    ("gcr.io/library/busybox", "gcr.io", "library/busybox", "latest", None,
     "gcr.io/library/busybox:latest", "gcr.io/library/busybox:latest"),
    ("LOCALDOMAIN/fooo", "LOCALDOMAIN", "fooo", "latest", None,
     "LOCALDOMAIN/fooo:latest", "LOCALDOMAIN/fooo:latest"),
    ("Foo/bar", "Foo", "bar", "latest", None, "Foo/bar:latest", "Foo/bar:latest"),
    ("[fc00::1]:5000/docker", "[fc00::1]:5000", "docker", "latest", None,
     "[fc00::1]:5000/docker:latest", "[fc00::1]:5000/docker:latest"),
    ("[fc00:1:2:3:4:5:6:7]:5000/library/debian", "[fc00:1:2:3:4:5:6:7]:5000", "library/debian",
     "latest", None, "[fc00:1:2:3:4:5:6:7]:5000/library/debian:latest",
     "[fc00:1:2:3:4:5:6:7]:5000/library/debian:latest"),
    # a single element is always an official image, even when it looks like a host
    ("192.168.0.1", "docker.io", "library/192.168.0.1", "latest", None,
     "docker.io/library/192.168.0.1:latest", "192.168.0.1:latest"),
    ("192.168.0.1:80", "docker.io", "library/192.168.0.1", "80", None,
     "docker.io/library/192.168.0.1:80", "192.168.0.1:80"),
    ("192.168.0.1:8/debian", "192.168.0.1:8", "debian", "latest", None,
     "192.168.0.1:8/debian:latest", "192.168.0.1:8/debian:latest"),
    # names that are allowed
    ("docker---rules/docker", "docker.io", "docker---rules/docker", "latest", None,
     "docker.io/docker---rules/docker:latest", "docker---rules/docker:latest"),
    ("dock__er/docker", "docker.io", "dock__er/docker", "latest", None,
     "docker.io/dock__er/docker:latest", "dock__er/docker:latest"),
    ("d/docker", "docker.io", "d/docker", "latest", None,
     "docker.io/d/docker:latest", "d/docker:latest"),
    ("docker.io/" + HEX64, "docker.io", "library/" + HEX64, "latest", None,
     f"docker.io/library/{HEX64}:latest", f"{HEX64}:latest"),
    ("dbcc1", "docker.io", "library/dbcc1", "latest", None,
     "docker.io/library/dbcc1:latest", "dbcc1:latest"),
    # tags
    ("busybox:Latest_1.2-rc", "docker.io", "library/busybox", "Latest_1.2-rc", None,
     "docker.io/library/busybox:Latest_1.2-rc", "busybox:Latest_1.2-rc"),
    ("busybox:" + "t" * 128, "docker.io", "library/busybox", "t" * 128, None,
     "docker.io/library/busybox:" + "t" * 128, "busybox:" + "t" * 128),
    # digests: no default tag; both kept when both given
    ("redis@" + D2, "docker.io", "library/redis", None, D2,
     f"docker.io/library/redis@{D2}", f"redis@{D2}"),
    ("dmcgowan/myapp@" + D2, "docker.io", "dmcgowan/myapp", None, D2,
     f"docker.io/dmcgowan/myapp@{D2}", f"dmcgowan/myapp@{D2}"),
    ("busybox:latest@" + D1, "docker.io", "library/busybox", "latest", D1,
     f"docker.io/library/busybox:latest@{D1}", f"busybox:latest@{D1}"),
    ("gcr.io/library/busybox:1@" + D1, "gcr.io", "library/busybox", "1", D1,
     f"gcr.io/library/busybox:1@{D1}", f"gcr.io/library/busybox:1@{D1}"),
    ("localhost:5000/a/b@" + D1, "localhost:5000", "a/b", None, D1,
     f"localhost:5000/a/b@{D1}", f"localhost:5000/a/b@{D1}"),
]


@pytest.mark.parametrize(("text", "registry", "repository", "tag", "digest", "full", "familiar"),
                         PARSE, ids=[p[0][:60] for p in PARSE])
def test_parse(text: str, registry: str, repository: str, tag: str | None, digest: str | None,
               full: str, familiar: str) -> None:
    ref = ImageRef.parse(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)
    assert ref.digest == (Digest.parse(digest) if digest else None)
    assert str(ref) == full
    assert ref.familiar() == familiar
    assert ref.name == f"{registry}/{repository}"
    # normalising is idempotent, from either form
    assert ImageRef.parse(full) == ref
    assert ImageRef.parse(familiar) == ref


INVALID = [
    ("", "repository name must have at least one component"),
    ("https://github.com/docker/docker", "invalid reference format"),
    ("docker/Docker", "repository name must be lowercase"),
    ("docker.io/docker/Docker", "repository name must be lowercase"),
    ("Busybox", "repository name must be lowercase"),
    ("busybox:Latest/X", "repository name must be lowercase"),  # "busybox:Latest" is a host
    ("busybox:latest/x", "invalid reference format"),
    ("0_0.0/x", "invalid reference format"),  # looks like a host (a dot), is not one
    ("-docker", "invalid reference format"),
    ("-docker/docker", "invalid reference format"),
    ("-docker.io/docker/docker", "invalid reference format"),
    ("docker-/docker", "invalid reference format"),
    ("-docker-/docker", "invalid reference format"),
    ("docker///docker", "invalid reference format"),
    ("docker.io/docker///docker", "invalid reference format"),
    ("____/____", "invalid reference format"),
    ("_docker/_docker", "invalid reference format"),
    ("dock..er/docker", "invalid reference format"),
    ("dock_.er/docker", "invalid reference format"),
    ("dock-.er/docker", "invalid reference format"),
    ("docker/", "invalid reference format"),
    ("[fc00::1]", "invalid reference format"),
    ("[fc00::1]:5000", "invalid reference format"),
    ("fc00::1:5000/debian", "invalid reference format"),
    ("[fe80::1%eth0]:5000/debian", "invalid reference format"),
    ("[2001:db8:3:4::192.0.2.33]:5000/debian", "invalid reference format"),
    (HEX64, "cannot specify 64-byte hexadecimal strings"),
    ("busybox:", "invalid reference format"),
    ("busybox:-tag", "invalid reference format"),
    ("busybox:.tag", "invalid reference format"),
    ("busybox:" + "t" * 129, "invalid reference format"),
    ("busybox:a b", "invalid reference format"),
    ("busybox\n", "invalid reference format"),
    (" busybox", "invalid reference format"),
    ("busybox@sha256:abc", "invalid reference format"),
    ("busybox@sha256:" + "a" * 63, "invalid checksum digest length"),
    ("busybox@sha256:" + "A" * 64, "invalid checksum digest format"),
    ("busybox@md5:" + "a" * 32, "unsupported digest algorithm md5"),
    ("busybox@" + D1 + ":tag", "invalid reference format"),
    ("a/" + "b" * 254, "repository name must not be more than 255 characters"),
    ("this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_" * 4 + "/docker",
     "invalid reference format"),
]


@pytest.mark.parametrize(("text", "reason"), INVALID, ids=[i[0][:40] or "empty" for i in INVALID])
def test_invalid(text: str, reason: str) -> None:
    with pytest.raises(InvalidReference) as info:
        ImageRef.parse(text)
    assert info.value.reason == reason
    assert str(info.value) == f'invalid reference "{text}": {reason}'
    assert isinstance(info.value, ValueError)


def test_name_length_limit_counts_the_repository_path() -> None:
    ok = "a/" + "b" * 253  # path "a/bbb..." is exactly 255
    assert len(ImageRef.parse(ok).repository) == 255
    # the registry does not count towards the limit
    assert ImageRef.parse("registry.example.com:5000/" + "c" * 255).repository == "c" * 255


@pytest.mark.parametrize(
    ("text", "api_host", "loopback"),
    [
        ("busybox", "registry-1.docker.io", False),
        ("docker.io/user/app", "registry-1.docker.io", False),
        ("index.docker.io/user/app", "registry-1.docker.io", False),
        ("localhost/x", "localhost", True),
        ("localhost:5000/x", "localhost:5000", True),
        ("127.0.0.1:5000/x", "127.0.0.1:5000", True),
        ("127.1.2.3/x", "127.1.2.3", True),
        ("[::1]:5000/x", "[::1]:5000", True),
        ("[fc00::1]:5000/x", "[fc00::1]:5000", False),
        ("128.0.0.1:5000/x", "128.0.0.1:5000", False),
        ("ghcr.io/o/x", "ghcr.io", False),
        ("localhost.example.com/x", "localhost.example.com", False),
    ],
)
def test_registry_host(text: str, api_host: str, loopback: bool) -> None:
    ref = ImageRef.parse(text)
    assert ref.api_host == api_host
    assert ref.is_loopback is loopback


def test_with_tag_and_digest() -> None:
    ref = ImageRef.parse("busybox")
    tagged = ref.with_tag("1.36")
    assert str(tagged) == "docker.io/library/busybox:1.36"
    assert ref.tag == "latest"  # values are immutable
    pinned = tagged.with_digest(D1)
    assert str(pinned) == f"docker.io/library/busybox:1.36@{D1}"
    assert pinned.manifest_reference == D1
    assert tagged.manifest_reference == "1.36"
    assert str(ImageRef.parse("redis@" + D2).with_tag("7")) == f"docker.io/library/redis:7@{D2}"
    assert ref.with_digest(Digest.parse(D2)).digest == Digest.parse(D2)
    with pytest.raises(InvalidReference, match="invalid tag format"):
        ref.with_tag("-foo")
    with pytest.raises(InvalidReference, match="invalid tag format"):
        ref.with_tag("")
    with pytest.raises(InvalidReference, match="invalid digest format"):
        ref.with_digest("foo")
    with pytest.raises(InvalidReference, match="invalid digest format"):
        ref.with_digest(Digest("sha256", "xyz"))


def test_refs_are_hashable_values() -> None:
    a = ImageRef.parse("busybox")
    assert a == ImageRef.parse("docker.io/library/busybox:latest")
    assert len({a, ImageRef.parse("library/busybox"), ImageRef.parse("busybox:1")}) == 2
    with pytest.raises(AttributeError):
        a.tag = "x"  # type: ignore[misc]


_COMPONENT = st.from_regex(r"[a-z0-9]{1,5}(?:(?:_|__|-+)[a-z0-9]{1,5}){0,2}", fullmatch=True)


@settings(max_examples=40, deadline=None)
@given(parts=st.lists(_COMPONENT, min_size=1, max_size=3),
       tag=st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}", fullmatch=True))
def test_round_trip(parts: list[str], tag: str) -> None:
    text = "/".join(parts) + ":" + tag
    ref = ImageRef.parse(text)
    assert ImageRef.parse(str(ref)) == ref
    assert ImageRef.parse(ref.familiar()) == ref
    assert ref.tag == tag


@given(text=st.text(max_size=40))
def test_only_invalid_reference_escapes(text: str) -> None:
    try:
        ref = ImageRef.parse(text)
    except InvalidReference:
        return
    assert ImageRef.parse(str(ref)) == ref


@pytest.mark.parametrize(("text", "go_message"), [
    ("Busybox", "invalid reference format: repository name (library/Busybox) must be lowercase"),
    ("docker/Docker", "invalid reference format: repository name (docker/Docker) must be lowercase"),
    ("Bad/Name:1", "invalid reference format: repository name (Name) must be lowercase"),
    (HEX64, f"invalid repository name ({HEX64}), cannot specify 64-byte hexadecimal strings"),
    ("busybox:", "invalid reference format"),
    ("busybox@sha256:" + "a" * 63, "invalid checksum digest length"),
    ("0_0.0/x", None),  # distribution/reference takes it (a name without a registry)
])
def test_the_go_library_s_own_words(text: str, go_message: str | None) -> None:
    # what BuildKit prints after 'failed to parse stage name ...'
    with pytest.raises(InvalidReference) as info:
        ImageRef.parse(text)
    assert info.value.go_message == go_message
