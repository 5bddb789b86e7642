"""Image tarballs: the OCI archive (an OCI layout in a tar that also carries docker's
manifest.json, so ``docker load`` and ``skopeo copy oci-archive:`` both take it), the classic
docker archive, and a reader for both.

Choices, and why:
- The OCI archive keeps the compressed layer blobs once, under blobs/sha256; its manifest.json
  points docker at those same files (docker load decompresses layers itself, since 1.x).
- The docker archive stores each layer uncompressed as ``<diff-id hex>/layer.tar``, with
  ``<config hex>.json`` and a ``repositories`` file: what ``docker save`` wrote up to 24.x, and
  so what every docker load, podman load and skopeo ``docker-archive:`` reads.
- Tar entries are sorted, owned by 0:0 without user or group names, with mtime
  SOURCE_DATE_EPOCH (or 0): the same image gives the same archive bytes.
- The archive is written beside ``dest`` and renamed: it appears complete or not at all.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import gzip
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import zstandard

from builder.digest import Digest, sha256_bytes, sha256_stream
from builder.errors import LayerError
from builder.oci.image import ImageSpec
from builder.oci.layout import (
    IMAGE_NAME,
    OCI_LAYOUT,
    layout_index,
    parse_name,
    resolve_manifest,
    select_entry,
)
from builder.oci.types import (
    Descriptor,
    ImageConfig,
    ImageFormatError,
    Index,
    Manifest,
    MediaType,
    Platform,
    decode,
    encode,
    host_platform,
)

__all__ = [
    "ArchiveImage",
    "ArchiveLayer",
    "open_uncompressed",
    "read_archive",
    "write_docker_archive",
    "write_oci_archive",
    "write_oci_index_archive",
]

# A payload is bytes, a file, or (size, opener of a stream of exactly that many bytes).
Payload = bytes | Path | tuple[int, Callable[[], IO[bytes]]] | None


def write_oci_archive(dest: str | Path, image: ImageSpec, tags: Sequence[str] = (), *,
                      source_date_epoch: int | None = None,
                      annotations: Mapping[str, str] | None = None) -> Path:
    """An OCI layout tarball of ``image`` named by ``tags``, with docker's manifest.json too;
    ``annotations`` on its index.json entries."""
    entries: dict[str, Payload] = {"blobs/": None, "blobs/sha256/": None, "oci-layout": OCI_LAYOUT}
    entries[_blob_name(image.manifest_digest)] = image.manifest_bytes
    for desc, source in image.blobs():
        entries[_blob_name(desc.digest)] = source
    entries["index.json"] = encode(layout_index([(image, tags)], annotations=annotations).to_json())
    entries["manifest.json"] = _docker_manifest_json(
        _blob_name(image.config_digest), _repo_tags(tags),
        [_blob_name(d.digest) for d in image.layers])
    return _write_tar(Path(dest), entries, source_date_epoch)


def write_oci_index_archive(dest: str | Path, index: Any, images: Sequence[ImageSpec],
                            tags: Sequence[str] = (), *, source_date_epoch: int | None = None,
                            annotations: Mapping[str, str] | None = None,
                            docker_image: ImageSpec | None = None) -> Path:
    """An OCI layout tarball of an image index (``index``: its ``manifest_descriptor``,
    ``manifest_digest`` and ``manifest_bytes``) and every image it lists, named by ``tags``.
    Docker's manifest.json, which holds one platform, names ``docker_image`` when given
    (the one image of an index that only adds its attestation), so docker load takes it."""
    entries: dict[str, Payload] = {"blobs/": None, "blobs/sha256/": None, "oci-layout": OCI_LAYOUT}
    entries[_blob_name(index.manifest_digest)] = index.manifest_bytes
    for image in images:
        entries[_blob_name(image.manifest_digest)] = image.manifest_bytes
        for desc, source in image.blobs():
            entries[_blob_name(desc.digest)] = source
    entries["index.json"] = encode(layout_index([(index, tags)], annotations=annotations).to_json())
    if docker_image is not None:
        entries["manifest.json"] = _docker_manifest_json(
            _blob_name(docker_image.config_digest), _repo_tags(tags),
            [_blob_name(d.digest) for d in docker_image.layers])
    return _write_tar(Path(dest), entries, source_date_epoch)


def write_docker_archive(dest: str | Path, image: ImageSpec, tags: Sequence[str] = (), *,
                         source_date_epoch: int | None = None) -> Path:
    """A docker-archive of ``image``: uncompressed ``<diff-id>/layer.tar`` layers."""
    repo_tags = _repo_tags(tags)
    config_name = f"{image.config_digest.hex}.json"
    entries: dict[str, Payload] = {config_name: image.config_bytes}
    layer_names = []
    for desc, diff_id in zip(image.layers, image.config.diff_ids):
        name = f"{diff_id.hex}/layer.tar"
        layer_names.append(name)
        if name not in entries:
            entries[f"{diff_id.hex}/"] = None
            entries[name] = _uncompressed_payload(image.blob_path(desc.digest), desc, diff_id)
    entries["manifest.json"] = _docker_manifest_json(config_name, repo_tags, layer_names)
    repositories: dict[str, dict[str, str]] = {}
    for repo_tag in repo_tags:
        repo, _, tag = repo_tag.rpartition(":")
        if layer_names:
            repositories.setdefault(repo, {})[tag] = layer_names[-1].split("/")[0]
    if repositories:
        entries["repositories"] = encode(repositories)
    return _write_tar(Path(dest), entries, source_date_epoch)


def _blob_name(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex}"


def _docker_manifest_json(config: str, repo_tags: list[str], layers: list[str]) -> bytes:
    return encode([{"Config": config, "RepoTags": repo_tags, "Layers": layers}])  # type: ignore[arg-type]


def _repo_tags(tags: Sequence[str]) -> list[str]:
    """docker's familiar names (busybox:1.36, ghcr.io/o/r:v1); digest-only references cannot
    be RepoTags and are left out."""
    out = []
    for tag in tags:
        ref = parse_name(tag)
        if ref.tag is None:
            continue
        name = dataclasses.replace(ref, digest=None).familiar()
        if name not in out:
            out.append(name)
    return out


def open_uncompressed(path: Path, media_type: str) -> IO[bytes]:
    """A stream of a layer blob's tar bytes, whatever its compression."""
    compression = MediaType.compression(media_type)
    raw = open(path, "rb")
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)  # type: ignore[return-value]
    return raw


def _uncompressed_payload(path: Path, desc: Descriptor, diff_id: Digest) -> Payload:
    if not MediaType.compression(desc.media_type):
        return path
    # A tar header needs the size before the data: one pass measures and checks the diff id,
    # the second streams into the archive. Memory stays flat; no temporary copy.
    try:
        with open_uncompressed(path, desc.media_type) as stream:
            digest, size = sha256_stream(stream)
    except (OSError, EOFError, zstandard.ZstdError) as exc:
        raise LayerError(f"layer {desc.digest} cannot be decompressed: {exc}") from None
    if digest != diff_id:
        raise LayerError(f"layer {desc.digest} decompresses to {digest}, but the image config "
                         f"says {diff_id}")
    return (size, lambda: open_uncompressed(path, desc.media_type))


def _write_tar(dest: Path, entries: dict[str, Payload], source_date_epoch: int | None) -> Path:
    if source_date_epoch is None:
        source_date_epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.tmp-")
    try:
        with os.fdopen(fd, "wb", buffering=0) as raw:
            out = _TarOut(raw)
            for name in sorted(entries):
                _add(out, name, entries[name], source_date_epoch)
            out.close()
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return dest


class _TarOut:
    """The bytes ``tarfile.open(mode="w", format=PAX_FORMAT)`` writes, with blob bodies copied
    by the kernel (copy_file_range, else sendfile): tarfile's addfile moves a 250 MB layer
    through Python in 16 KiB reads and writes. Headers still come from TarInfo.tobuf, so the
    archive's bytes (and so its digest) are tarfile's."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._fd = raw.fileno()
        self.offset = 0
        self._kernel: list[Callable[[int, int, int], int]] = [self._copy_file_range,
                                                              self._sendfile]

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # an unbuffered write may be short
            n = self._raw.write(view)
            view = view[n or 0:]
        self.offset += len(data)

    def header(self, info: tarfile.TarInfo) -> None:
        self.write(info.tobuf(tarfile.PAX_FORMAT, _ENCODING, "surrogateescape"))

    def copy_file(self, src: int, size: int, name: str) -> None:
        """``size`` bytes of the file ``src`` from its start; a file that ends sooner (changed
        under us) is an error, as in tarfile."""
        done = 0
        while done < size:
            n = self._copy(src, done, min(size - done, 1 << 30))
            if n == 0:
                raise LayerError(f"blob {name} ended after {done} of {size} bytes; "
                                 "was the store changed during the export?")
            done += n
        self.offset += size
        self.pad()

    def _copy(self, src: int, at: int, count: int) -> int:
        while self._kernel:
            try:
                return self._kernel[0](src, at, count)
            except OSError as exc:
                if exc.errno not in _NO_KERNEL_COPY:
                    raise
                del self._kernel[0]  # not here (another filesystem, an old kernel): the next way
        return self._read_write(src, at, count)

    def _copy_file_range(self, src: int, at: int, count: int) -> int:
        return os.copy_file_range(src, self._fd, count, at)

    def _sendfile(self, src: int, at: int, count: int) -> int:
        return os.sendfile(self._fd, src, at, count)

    def _read_write(self, src: int, at: int, count: int) -> int:
        data = os.pread(src, min(count, 1 << 20), at)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        return len(data)

    def copy_stream(self, stream: IO[bytes], size: int, name: str) -> None:
        left = size
        while left:
            chunk = stream.read(min(left, 1 << 20))
            if not chunk:
                raise LayerError(f"{name} ended {left} bytes short of {size}")
            self.write(chunk)
            left -= len(chunk)
        self.pad()

    def pad(self) -> None:
        if self.offset % tarfile.BLOCKSIZE:
            self.write(tarfile.NUL * (tarfile.BLOCKSIZE - self.offset % tarfile.BLOCKSIZE))

    def close(self) -> None:
        """Two zero blocks, then zeros up to a whole record of 20 blocks, as tarfile ends."""
        self.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        if self.offset % tarfile.RECORDSIZE:
            self.write(tarfile.NUL * (tarfile.RECORDSIZE - self.offset % tarfile.RECORDSIZE))


_ENCODING = tarfile.ENCODING  # what tarfile.open uses when given none
# copy_file_range across filesystems or on ones without it, sendfile to some files: fall back
_NO_KERNEL_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF}


def _add(out: _TarOut, name: str, payload: Payload, mtime: int) -> None:
    info = tarfile.TarInfo(name.rstrip("/"))
    info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, 0, 0, "", ""
    if payload is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        out.header(info)
        return
    info.mode = 0o644
    if isinstance(payload, bytes):
        info.size = len(payload)
        out.header(info)
        out.write(payload)
        out.pad()
    elif isinstance(payload, Path):
        try:
            f = open(payload, "rb", buffering=0)
        except FileNotFoundError:
            raise LayerError(f"blob {name} is missing from the store ({payload})") from None
        with f:
            info.size = os.fstat(f.fileno()).st_size
            out.header(info)
            out.copy_file(f.fileno(), info.size, name)
    else:
        info.size, opener = payload
        out.header(info)
        with opener() as stream:
            out.copy_stream(stream, info.size, name)


# ----------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class ArchiveLayer:
    """One layer of an image in an OCI or docker archive."""

    member: str          # the tar member holding the layer (compressed or not)
    media_type: str
    diff_id: Digest
    descriptor: Descriptor | None  # None in a docker archive: it names no compressed digest


@dataclass(frozen=True)
class ArchiveImage:
    """An image found in an OCI or docker archive."""

    path: Path
    kind: Literal["oci", "docker"]
    config: ImageConfig
    config_bytes: bytes
    config_digest: Digest
    manifest: Manifest | None  # the OCI/docker manifest; None for a docker archive
    layers: tuple[ArchiveLayer, ...]
    repo_tags: tuple[str, ...]

    @contextlib.contextmanager
    def open_layer(self, index: int) -> Iterator[IO[bytes]]:
        """The raw bytes of layer ``index`` as stored in the archive."""
        with tarfile.open(self.path, "r:") as tar:
            f = tar.extractfile(self.layers[index].member)
            if f is None:
                raise ImageFormatError(f"{self.path}: {self.layers[index].member} is not a file")
            with f:
                yield f


def read_archive(path: str | Path, *, tag: str | None = None,
                 platform: Platform | None = None) -> ArchiveImage:
    """Read an OCI archive (index.json wins when both are present) or a docker archive."""
    path = Path(path)
    where = f"archive {path}"
    try:
        tar = tarfile.open(path, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise ImageFormatError(f"{where} cannot be read as a tar file: {exc}") from None
    with tar:
        reader = _Members(tar, where)
        if "index.json" in reader.members and "oci-layout" in reader.members:
            return _read_oci(path, where, reader, tag, platform or host_platform())
        if "manifest.json" in reader.members:
            return _read_docker(path, where, reader, tag)
    raise ImageFormatError(f"{where} is neither an OCI archive nor a docker archive "
                           "(no index.json or manifest.json)")


class _Members:
    def __init__(self, tar: tarfile.TarFile, where: str) -> None:
        self.tar, self.where = tar, where
        self.members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}

    def read(self, name: str, limit: int = -1) -> bytes:
        member = self.members.get(name)
        f = self.tar.extractfile(member) if member is not None else None
        if f is None:
            raise ImageFormatError(f"{self.where}: {name} is missing")
        with f:
            return f.read(limit)


def _read_oci(path: Path, where: str, tar: _Members, tag: str | None,
              platform: Platform) -> ArchiveImage:
    index = Index.from_json(decode(tar.read("index.json"), f"{where}: index.json"),
                            MediaType.OCI_INDEX)
    entry = select_entry(index, tag, where)
    image = resolve_manifest(entry, lambda d: tar.read(_blob_name(d)), platform, where)
    layers = tuple(ArchiveLayer(_blob_name(d.digest), d.media_type, diff, d)
                   for d, diff in zip(image.manifest.layers, image.config.diff_ids))
    names = tuple(d.annotations[IMAGE_NAME] for d in index.manifests
                  if d.digest == entry.digest and IMAGE_NAME in d.annotations)
    return ArchiveImage(path, "oci", image.config, image.config_bytes, image.manifest.config.digest,
                        image.manifest, layers, names)


def _read_docker(path: Path, where: str, tar: _Members, tag: str | None) -> ArchiveImage:
    try:
        entries = json.loads(tar.read("manifest.json"))
    except ValueError as exc:
        raise ImageFormatError(f"{where}: manifest.json is not valid JSON: {exc}") from None
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ImageFormatError(f"{where}: manifest.json is not a list of images")
    chosen = entries[0]
    if tag is not None:
        wanted = set(_repo_tags([tag])) | {tag}
        matches = [e for e in entries if wanted & set(e.get("RepoTags") or [])]
        if not matches:
            raise ImageFormatError(f"{where} has no image tagged {tag!r}")
        chosen = matches[0]
    elif len(entries) > 1:
        raise ImageFormatError(f"{where} holds {len(entries)} images; name one by its tag")
    config_name, layer_names = chosen.get("Config"), chosen.get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list):
        raise ImageFormatError(f"{where}: manifest.json lacks Config or Layers")
    config_bytes = tar.read(config_name)
    config = ImageConfig.from_json(decode(config_bytes, f"{where}: image config"))
    if len(config.diff_ids) != len(layer_names):
        raise ImageFormatError(f"{where}: {len(layer_names)} layers but the config lists "
                               f"{len(config.diff_ids)} diff ids")
    layers = []
    for name, diff_id in zip(layer_names, config.diff_ids):
        head = tar.read(name, 4)  # docker load takes compressed layers too: sniff which
        media = (MediaType.DOCKER_LAYER_GZIP if head.startswith(b"\x1f\x8b") else
                 MediaType.OCI_LAYER_ZSTD if head.startswith(b"\x28\xb5\x2f\xfd") else
                 MediaType.DOCKER_LAYER)
        layers.append(ArchiveLayer(name, media, diff_id, None))
    return ArchiveImage(path, "docker", config, config_bytes, sha256_bytes(config_bytes), None,
                        tuple(layers), tuple(chosen.get("RepoTags") or ()))
