"""OCI image layout directories (oci-layout, index.json, blobs/sha256/...): write one from an
ImageSpec, read one back (``OciLayout(path).resolve(tag)``) for ``oci-layout://DIR[:TAG]``.

The index entries carry ``org.opencontainers.image.ref.name`` (the tag part) and
``io.containerd.image.name`` (the full name), as BuildKit and containerd write them; the
helpers that build and search such an index are shared with the archive writer and reader.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from builder.digest import Digest, sha256_bytes
from builder.errors import UsageError
from builder.oci.image import ImageSpec, ResolvedImage, image_from_manifest
from builder.oci.types import (
    Descriptor,
    ImageConfig,
    ImageFormatError,
    Index,
    MediaType,
    Platform,
    decode,
    encode,
    host_platform,
    parse_manifest_or_index,
)

if TYPE_CHECKING:
    from builder.reference import ImageRef

__all__ = [
    "IMAGE_NAME",
    "OCI_LAYOUT",
    "REF_NAME",
    "OciLayout",
    "ResolvedImage",
    "layout_index",
    "names_for",
    "parse_name",
    "resolve_manifest",
    "select_entry",
    "write_layout",
]

OCI_LAYOUT = encode({"imageLayoutVersion": "1.0.0"})
REF_NAME = "org.opencontainers.image.ref.name"
IMAGE_NAME = "io.containerd.image.name"


def parse_name(name: str) -> ImageRef:
    """A user's name for an image (``-t``), normalised as docker does: ``app`` is
    ``docker.io/library/app:latest``."""
    from builder.reference import ImageRef  # the front end's parser; imported late on purpose

    try:
        return ImageRef.parse(name)
    except ValueError as exc:
        raise UsageError(f"invalid image name {name!r}: {exc}") from None


def names_for(name: str) -> tuple[str, str]:
    """(image name, ref name) as containerd and BuildKit annotate an index entry:
    "busybox:1.36" gives ("docker.io/library/busybox:1.36", "1.36")."""
    ref = parse_name(name)
    return str(ref), str(ref)[len(ref.name):].lstrip(":")  # "1.36", "1.36@sha256:..", "sha256:.."


def layout_index(entries: Sequence[tuple[ImageSpec, Sequence[str]]],
                 existing: Index | None = None, *,
                 annotations: Mapping[str, str] | None = None) -> Index:
    """index.json naming each image once per tag; entries of ``existing`` with the same names
    are replaced (as BuildKit's exporter does). ``annotations`` go on each added entry (the
    manifest descriptor's, `--annotation manifest-descriptor:K=V`)."""
    kept = list(existing.manifests) if existing else []
    added: list[Descriptor] = []
    for image, tags in entries:
        if not tags:
            added.append(image.manifest_descriptor(annotations))
        for tag in tags:
            image_name, ref_name = names_for(tag)
            ann = {**(annotations or {}), REF_NAME: ref_name, IMAGE_NAME: image_name}
            kept = [d for d in kept if d.annotations.get(IMAGE_NAME) != image_name]
            added.append(image.manifest_descriptor(ann))
    return Index(manifests=tuple(kept + added), media_type=MediaType.OCI_INDEX)


def select_entry(index: Index, tag: str | None, where: str) -> Descriptor:
    """The index.json entry for ``tag`` (a ref name, or a full image name), or the only one."""
    if tag is None:
        digests = {d.digest for d in index.manifests}
        if len(digests) == 1:
            return index.manifests[0]
        names = sorted(d.annotations.get(REF_NAME, str(d.digest)) for d in index.manifests)
        raise ImageFormatError(f"{where} holds {len(index.manifests)} images; name one of: "
                               f"{', '.join(names) or 'none'}")
    # A tag is a ref name ("v1", as in oci-layout://DIR:v1) or a full image name.
    for d in index.manifests:
        if d.annotations.get(REF_NAME) == tag or d.annotations.get(IMAGE_NAME) == tag:
            return d
    full = _full_name(tag)
    for d in index.manifests:
        if full and d.annotations.get(IMAGE_NAME) == full:
            return d
    names = sorted(d.annotations[REF_NAME] for d in index.manifests if REF_NAME in d.annotations)
    raise ImageFormatError(f"{where} has no image tagged {tag!r}; "
                           f"tags there: {', '.join(names) or 'none'}")


def _full_name(tag: str) -> str:
    try:
        return names_for(tag)[0]
    except UsageError:
        return ""


def resolve_manifest(desc: Descriptor, read_blob: Callable[[Digest], bytes],
                     platform: Platform, where: str) -> ResolvedImage:
    """Follow ``desc`` through nested indexes to ``platform``'s manifest; read and check its
    config. ``read_blob`` returns a blob's bytes (small blobs only: manifests and configs)."""
    for _ in range(8):  # nested indexes are rare; a bound stops a cycle
        data = _checked(read_blob(desc.digest), desc.digest, where)
        parsed = parse_manifest_or_index(data, desc.media_type)
        if isinstance(parsed, Index):
            desc = parsed.select(platform, f"{where}: index {desc.digest.short}")
            continue
        config_bytes = _checked(read_blob(parsed.config.digest), parsed.config.digest, where)
        config = ImageConfig.from_json(decode(config_bytes, f"{where}: image config"))
        if len(config.diff_ids) != len(parsed.layers):
            raise ImageFormatError(f"{where}: manifest {desc.digest.short} has {len(parsed.layers)}"
                                   f" layers but its config lists {len(config.diff_ids)} diff ids")
        return ResolvedImage(desc.digest, parsed, data, config, config_bytes)
    raise ImageFormatError(f"{where}: image indexes nest too deeply")


def _checked(data: bytes, digest: Digest, where: str) -> bytes:
    if digest.algorithm == "sha256" and sha256_bytes(data) != digest:
        raise ImageFormatError(f"{where}: blob {digest} does not match its digest")
    return data


class OciLayout:
    """A read-only view of an OCI image layout directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def index(self) -> Index:
        marker = self.path / "oci-layout"
        try:
            version = decode(marker.read_bytes(), f"{marker}").get("imageLayoutVersion")
            data = (self.path / "index.json").read_bytes()
        except FileNotFoundError as exc:
            raise ImageFormatError(f"{self.path} is not an OCI image layout "
                                   f"({Path(exc.filename or '').name} is missing)") from None
        if version != "1.0.0":
            raise ImageFormatError(f"{marker}: unsupported imageLayoutVersion {version!r}")
        return Index.from_json(decode(data, f"{self.path}/index.json"), MediaType.OCI_INDEX)

    def blob_path(self, digest: Digest) -> Path:
        return self.path / "blobs" / digest.algorithm / digest.hex

    def _read_blob(self, digest: Digest) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise ImageFormatError(f"{self.path}: blob {digest} is missing") from None

    def resolve(self, tag: str | None = None, *, platform: Platform | None = None) -> ResolvedImage:
        """The image tagged ``tag`` (or the only one), for ``platform`` (default: this host)."""
        where = f"OCI layout {self.path}"
        entry = select_entry(self.index(), tag, where)
        return resolve_manifest(entry, self._read_blob, platform or host_platform(), where)

    def image(self, tag: str | None = None, *, platform: Platform | None = None) -> ImageSpec:
        resolved = self.resolve(tag, platform=platform)
        return image_from_manifest(resolved.manifest_bytes, self.blob_path)


def write_layout(dest: str | Path, image: ImageSpec, tags: Sequence[str] = ()) -> Index:
    """Add ``image`` to the layout at ``dest`` (made if missing), named by ``tags``.

    Blobs are hard-linked from the store when they can be, else copied; each appears whole
    (aside, then renamed) and index.json is replaced last, so a reader never sees a tag whose
    blobs are not all there.
    """
    root = Path(dest)
    layout = OciLayout(root)
    existing = layout.index() if (root / "index.json").exists() else None
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    _put_bytes(root / "oci-layout", OCI_LAYOUT)
    _put_bytes(layout.blob_path(image.manifest_digest), image.manifest_bytes)
    for desc, source in image.blobs():
        target = layout.blob_path(desc.digest)
        if target.exists():
            continue
        if isinstance(source, bytes):
            _put_bytes(target, source)
        else:
            _put_file(target, source)
    index = layout_index([(image, tags)], existing)
    _put_bytes(root / "index.json", encode(index.to_json()), replace=True)
    return index


def _put_bytes(path: Path, data: bytes, *, replace: bool = False) -> None:
    if path.exists() and not replace:
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _put_file(path: Path, source: Path) -> None:
    tmp = path.parent / f".tmp-{path.name}-{os.getpid()}"
    _unlink(str(tmp))
    try:
        try:
            os.link(source, tmp)
        except OSError:  # another filesystem, or links not allowed: copy
            shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    except FileNotFoundError:
        _unlink(str(tmp))
        raise ImageFormatError(f"blob {path.name} is missing from the store ({source})") from None
    except BaseException:
        _unlink(str(tmp))
        raise


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

