"""`pybuild save` and `pybuild load`: stored images to one tarball and back.

``save`` writes the OCI archive that also carries docker's manifest.json (builder.oci.archive),
so both `docker load` and `skopeo copy oci-archive:` take it; several images are several
entries of index.json and of manifest.json, sharing their blobs. ``load`` takes that, an OCI
archive without manifest.json, or a classic docker archive; every blob is checked against its
digest (and every layer against its diff id) before it enters the store, and names are written
last.
"""
from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .cache.store import LayerBlob, Store
from .digest import Digest, sha256_stream
from .errors import BuildError
from .images import ImageStore

__all__ = ["LoadedImage", "load_archive", "save_images", "tar_open_problem"]


@dataclass(frozen=True)
class LoadedImage:
    """An image loaded from an archive into the store."""

    names: tuple[str, ...]   # normalised names given to it (none for an untagged image)
    manifest_digest: Digest
    config_digest: Digest


def save_images(store: Store, names: Sequence[str], dest: str | Path) -> Path:
    """One OCI archive (with docker's manifest.json) of the stored images ``names``."""
    from .oci.archive import write_oci_archive
    from .reference import ImageRef

    images = ImageStore(store)
    chosen: dict[Digest, tuple[Any, list[str]]] = {}
    for name in names:
        found = images.lookup(name)
        spec, tags = chosen.setdefault(found.manifest_digest, (images.spec(found), []))
        if found.name not in (name, name.removeprefix("sha256:")) and _is_id(name, found):
            continue  # saved by image ID: docker writes no name for it
        tag = ImageRef.parse(found.name).familiar()
        if tag not in tags:
            tags.append(tag)
    entries = list(chosen.values())
    if len(entries) == 1:
        spec, tags = entries[0]
        return write_oci_archive(dest, spec, tags)
    return _write_many(Path(dest), entries)


def _is_id(name: str, found: Any) -> bool:
    return found.image_id.hex.startswith(name.removeprefix("sha256:").lower())


def _write_many(dest: Path, entries: list[tuple[Any, list[str]]]) -> Path:
    # The archive writer's own pieces, for several images in one tarball.
    from .oci.archive import Payload, _blob_name, _repo_tags, _write_tar
    from .oci.layout import OCI_LAYOUT, layout_index
    from .oci.types import encode

    files: dict[str, Payload] = {"blobs/": None, "blobs/sha256/": None, "oci-layout": OCI_LAYOUT}
    docker: list[dict[str, Any]] = []
    for spec, tags in entries:
        files[_blob_name(spec.manifest_digest)] = spec.manifest_bytes
        for desc, source in spec.blobs():
            files[_blob_name(desc.digest)] = source
        docker.append({"Config": _blob_name(spec.config_digest), "RepoTags": _repo_tags(tags),
                       "Layers": [_blob_name(d.digest) for d in spec.layers]})
    files["index.json"] = encode(layout_index(entries).to_json())
    files["manifest.json"] = encode(docker)  # type: ignore[arg-type]
    return _write_tar(dest, files, None)


# ------------------------------------------------------------------------------ load

def load_archive(store: Store, path: str | Path) -> list[LoadedImage]:
    """Every image of an OCI or docker archive into the store, verified, then named."""
    from .oci.types import ImageFormatError

    path = Path(path)
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by the with below)
    except FileNotFoundError:
        raise BuildError(f"cannot load {path}: no such file") from None
    except (OSError, tarfile.TarError) as exc:
        raise BuildError(f"cannot load {path}: {tar_open_problem(exc)}") from None
    try:
        with tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
            reader = _Reader(tar, members, f"archive {path}")
            if "index.json" in members and "oci-layout" in members:
                loaded = _load_oci(store, reader)
            elif "manifest.json" in members:
                loaded = _load_docker(store, reader, path)
            else:
                raise BuildError(f"cannot load {path}: it is neither an OCI archive nor a docker "
                                 "archive (no index.json or manifest.json)")
    except ImageFormatError as exc:
        raise BuildError(f"cannot load {path}: {exc.message}") from None
    images = ImageStore(store)
    for image in loaded:  # names last: a name never points at an image half loaded
        images.keep(image.names, image)  # without a name: kept dangling, as docker load does
    return loaded


class _Reader:
    def __init__(self, tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], where: str) -> None:
        self.tar, self.members, self.where = tar, members, where

    def open(self, name: str) -> IO[bytes]:
        member = self.members.get(name)
        f = self.tar.extractfile(member) if member is not None else None
        if f is None:
            raise BuildError(f"{self.where}: {name} is missing")
        return f

    def read(self, name: str, limit: int = 4 << 20) -> bytes:
        with self.open(name) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise BuildError(f"{self.where}: {name} is larger than {limit} bytes")
        return data


def _load_oci(store: Store, reader: _Reader) -> list[LoadedImage]:
    from .oci.layout import IMAGE_NAME, resolve_manifest
    from .oci.types import Index, MediaType, decode, host_platform

    index = Index.from_json(decode(reader.read("index.json"), f"{reader.where}: index.json"),
                            MediaType.OCI_INDEX)
    by_digest: dict[Digest, list[str]] = {}
    first: dict[Digest, Any] = {}
    for desc in index.manifests:
        first.setdefault(desc.digest, desc)
        names = by_digest.setdefault(desc.digest, [])
        if desc.annotations.get(IMAGE_NAME):
            names.append(ImageStore.normalize(desc.annotations[IMAGE_NAME]))

    def blob(digest: Digest) -> bytes:
        return reader.read(f"blobs/{digest.algorithm}/{digest.hex}")

    loaded = []
    for digest, names in by_digest.items():
        resolved = resolve_manifest(first[digest], blob, host_platform(), reader.where)
        for desc, diff_id in zip(resolved.manifest.layers, resolved.config.diff_ids):
            _put_layer(store, reader, f"blobs/{desc.digest.algorithm}/{desc.digest.hex}",
                       desc.digest, desc.media_type, diff_id)
        store.put_blob_bytes(resolved.config_bytes)
        store.put_blob_bytes(resolved.manifest_bytes)
        loaded.append(LoadedImage(tuple(names), resolved.manifest_digest,
                                  resolved.manifest.config.digest))
    return loaded


def _load_docker(store: Store, reader: _Reader, path: Path) -> list[LoadedImage]:
    from .oci.archive import read_archive
    from .oci.types import Descriptor, Manifest, MediaType, encode

    try:
        entries = json.loads(reader.read("manifest.json"))
        assert isinstance(entries, list) and all(isinstance(e, dict) for e in entries)
    except (ValueError, AssertionError):
        raise BuildError(f"{reader.where}: manifest.json is not a list of images") from None
    loaded = []
    for entry in entries:
        tags = [str(t) for t in entry.get("RepoTags") or ()]
        if len(entries) > 1 and not tags:
            raise BuildError(f"{reader.where}: an image without a name among {len(entries)} "
                             "cannot be told apart; save it alone, or by name")
        image = read_archive(path, tag=tags[0] if len(entries) > 1 else None)
        layers = []
        for layer in image.layers:
            blob = _put_layer(store, reader, layer.member, None, layer.media_type, layer.diff_id)
            layers.append(Descriptor(layer.media_type, blob.digest, blob.size))
        config_digest, _ = store.put_blob_bytes(image.config_bytes)
        manifest = Manifest(media_type=MediaType.DOCKER_MANIFEST,
                            config=Descriptor(MediaType.DOCKER_CONFIG, config_digest,
                                              len(image.config_bytes)),
                            layers=tuple(layers))
        manifest_digest, _ = store.put_blob_bytes(encode(manifest.to_json()))
        loaded.append(LoadedImage(tuple(ImageStore.normalize(t) for t in tags), manifest_digest,
                                  config_digest))
    return loaded


def _put_layer(store: Store, reader: _Reader, member: str, digest: Digest | None, media: str,
               diff_id: Digest) -> LayerBlob:
    """Copy a layer out of the archive into the store: its digest (when the archive names one)
    and its diff id must match, or nothing is kept."""
    from .oci.archive import open_uncompressed

    tmp = store.tempfile("load-")
    h = hashlib.sha256()
    with reader.open(member) as src, open(tmp, "wb") as out:
        while chunk := src.read(1 << 20):
            h.update(chunk)
            out.write(chunk)
    actual = Digest.sha256(h.hexdigest())
    try:
        if digest is not None and actual != digest:
            raise BuildError(f"{reader.where}: blob {digest} does not match its digest (got "
                             f"{actual}); nothing was loaded")
        try:
            with open_uncompressed(tmp, media) as stream:
                unpacked, _ = sha256_stream(stream)
        except (OSError, EOFError, ValueError) as exc:
            raise BuildError(f"{reader.where}: layer {member} cannot be decompressed: {exc}") from None
        if unpacked != diff_id:
            raise BuildError(f"{reader.where}: layer {member} is {unpacked} once decompressed, but "
                             f"the image config says {diff_id}; nothing was loaded")
        final, size = store.put_blob_file(tmp, actual)
    finally:
        tmp.unlink(missing_ok=True)
    blob = LayerBlob(diff_id, final, size, media)
    store.add_layer_blob(blob)
    return blob


def tar_open_problem(exc: BaseException) -> str:
    """Why a file would not open as a tar archive, in a sentence (tarfile's own message for
    a file that is none lists each decompressor it tried)."""
    if isinstance(exc, tarfile.ReadError):
        return "not a tar archive (plain, or compressed with gzip, bzip2 or xz)"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot read it ({exc.strerror})"
    return f"not a tar archive ({exc})"
