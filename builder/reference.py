"""ImageRef: an image reference ``registry/repository[:tag][@digest]`` normalised as docker
normalises it (distribution/reference's ParseNormalizedNamed, then ``latest`` when the
reference names neither a tag nor a digest).

This module owns the grammar of references and the docker conventions around it: the
default registry ``docker.io`` and its ``library/`` namespace, the short "familiar" form
docker prints, the host the registry API really lives on, and which registries are spoken
to over plain HTTP (loopback ones, as docker does). It does no I/O.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from builder.digest import Digest

__all__ = ["DEFAULT_REGISTRY", "DEFAULT_TAG", "ImageRef", "InvalidReference"]

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
_LEGACY_REGISTRY = "index.docker.io"
_DOCKER_HUB_API = "registry-1.docker.io"
_OFFICIAL_PREFIX = "library/"
MAX_NAME_LENGTH = 255

# The grammar of distribution/reference, spelled out for Python (whose \w and $ differ
# from Go's: \w is ASCII there, and $ must not match before a final newline here).
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_REMOTE_NAME = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_AND_PORT = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE = re.compile(
    rf"(?P<name>(?:{_DOMAIN_AND_PORT}/)?{_REMOTE_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
_NAME = re.compile(rf"(?:(?P<domain>{_DOMAIN_AND_PORT})/)?(?P<path>{_REMOTE_NAME})")
_IDENTIFIER = re.compile(r"[a-f0-9]{64}")
# Algorithms go-digest knows, with the length of their hex part.
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


class InvalidReference(ValueError):
    """A reference that docker would refuse. ``str()`` is ``invalid reference "X": why``;
    ``go_message`` is distribution/reference's own error (what BuildKit prints), or None
    where that library accepts the text and only a pull would fail."""

    def __init__(self, reference: str, reason: str, go_message: str | None = "") -> None:
        super().__init__(f'invalid reference "{reference}": {reason}')
        self.reference = reference
        self.reason = reason
        self.go_message = reason if go_message == "" else go_message


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A normalised reference. ``tag`` is None only when a digest is given without one."""

    registry: str
    repository: str
    tag: str | None = DEFAULT_TAG
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Parse and normalise: ``busybox`` -> ``docker.io/library/busybox:latest``."""
        if _IDENTIFIER.fullmatch(text):
            raise InvalidReference(text, "cannot specify 64-byte hexadecimal strings",
                                   f"invalid repository name ({text}), cannot specify 64-byte "
                                   "hexadecimal strings")
        domain, remainder = _split_docker_domain(text)
        remote = remainder.partition(":")[0]
        if remote.lower() != remote:
            raise InvalidReference(text, "repository name must be lowercase",
                                   f"invalid reference format: repository name ({remote}) must "
                                   "be lowercase")
        full = f"{domain}/{remainder}"
        m = _REFERENCE.fullmatch(full)
        if m is None:
            if full.lower() != full and _REFERENCE.fullmatch(full.lower()):
                raise InvalidReference(text, "repository name must be lowercase")
            if not text:
                raise InvalidReference(text, "repository name must have at least one component")
            raise InvalidReference(text, "invalid reference format")
        name = _NAME.fullmatch(m["name"])
        assert name is not None
        if name["domain"] is None:
            # "a_b.c/x": taken for a host, but not a valid one. distribution/reference
            # then returns a name without a registry, which nothing can pull; refuse it.
            raise InvalidReference(text, "invalid reference format", None)
        if len(name["path"]) > MAX_NAME_LENGTH:
            raise InvalidReference(
                text, f"repository name must not be more than {MAX_NAME_LENGTH} characters")
        digest = _parse_digest(text, m["digest"]) if m["digest"] else None
        tag = m["tag"] or (None if digest else DEFAULT_TAG)
        return cls(registry=name["domain"], repository=name["path"], tag=tag, digest=digest)

    # -- the forms docker shows ----------------------------------------------------
    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        return self.name + self._suffix()

    def familiar(self) -> str:
        """Docker's short form: ``busybox:latest``, ``user/app:v1``, ``127.0.0.1:5000/x:1``."""
        if self.registry != DEFAULT_REGISTRY:
            return str(self)
        path = self.repository
        rest = path.removeprefix(_OFFICIAL_PREFIX)
        if rest != path and "/" not in rest:
            path = rest
        return path + self._suffix()

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    # -- talking to the registry ---------------------------------------------------
    @property
    def api_host(self) -> str:
        """Where the registry API is served (Docker Hub's is not docker.io itself)."""
        return _DOCKER_HUB_API if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def is_loopback(self) -> bool:
        """A registry on this machine (localhost, 127.0.0.0/8, ::1): docker uses plain HTTP."""
        host = self.registry
        if host.startswith("["):
            host = host[1 : host.index("]")]
        else:
            host = host.partition(":")[0]
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def manifest_reference(self) -> str:
        """What to ask the registry's manifest endpoint for: the digest, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or DEFAULT_TAG

    # -- new values ----------------------------------------------------------------
    def with_tag(self, tag: str) -> ImageRef:
        """The same repository with another tag (a digest is kept, as docker keeps it)."""
        if not re.fullmatch(_TAG, tag):  # compiled here: most names are checked whole
            raise InvalidReference(f"{self.name}:{tag}", "invalid tag format")
        return replace(self, tag=tag)

    def with_digest(self, digest: Digest | str) -> ImageRef:
        """The same reference pinned to a digest (the tag is kept, as docker keeps it)."""
        if isinstance(digest, str):
            digest = _parse_digest(f"{self.name}@{digest}", digest)
        elif not re.fullmatch(_DIGEST, str(digest)):
            raise InvalidReference(f"{self.name}@{digest}", "invalid digest format")
        return replace(self, digest=digest)


def _split_docker_domain(name: str) -> tuple[str, str]:
    """Which part of the text is a registry; the rest is the repository (and tag/digest)."""
    first, slash, rest = name.partition("/")
    if not slash:
        # A single element ("ubuntu", "ubuntu:22.04") is always an official image.
        return DEFAULT_REGISTRY, _OFFICIAL_PREFIX + name
    if first == "localhost":
        domain, remote = first, rest
    elif first == _LEGACY_REGISTRY:
        domain, remote = DEFAULT_REGISTRY, rest
    elif any(c in first for c in ".:") or first.lower() != first:
        # A dot or a port, or capitals (not allowed in a namespace): it is a host.
        domain, remote = first, rest
    else:
        domain, remote = DEFAULT_REGISTRY, name
    if domain == DEFAULT_REGISTRY and "/" not in remote:
        remote = _OFFICIAL_PREFIX + remote
    return domain, remote


def _parse_digest(text: str, value: str) -> Digest:
    algorithm, _, hexpart = value.partition(":")
    if not re.fullmatch(_DIGEST, value):
        raise InvalidReference(text, "invalid digest format")
    length = _DIGEST_LENGTHS.get(algorithm)
    if length is None:
        raise InvalidReference(text, f"unsupported digest algorithm {algorithm}")
    if len(hexpart) != length:
        raise InvalidReference(text, "invalid checksum digest length")
    if not re.fullmatch(r"[a-f0-9]+", hexpart):
        raise InvalidReference(text, "invalid checksum digest format")
    return Digest(algorithm, hexpart)
