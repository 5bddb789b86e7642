"""The local image store: names (tags) pointing at manifests whose blobs are in the store.

A built image lands here under its `-t` names; `FROM` of such a name uses it without a
network request. An image without a name is kept as docker keeps it, "dangling": a build
without `-t`, an archive loaded without names, an image whose last name moved to another
image. It is listed as `<none>:<none>` and found by its ID until `rmi` removes it.

Names are kept normalised (docker.io/library/x:latest). This module owns what
`pybuild images|tag|rmi|inspect|pull|push` do with those names, and the record of which
registry repositories each blob is known to be in (for cross-repository mounts on push).
Archives (`save`, `load`) are in builder.imagearchive.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cache.store import Store
from .digest import Digest, canonical_json
from .errors import BuildError, UsageError

if TYPE_CHECKING:
    import datetime as _dt

__all__ = ["DANGLING", "BlobSources", "ImageStore", "StoredImage", "human_duration", "human_size",
           "import_rootfs"]

DANGLING = "<none>:<none>"  # the name of an image that has none, as `docker images` shows it
_DANGLING_REF = "<none>@"  # + manifest digest: its entry in refs/ (never a valid image name)


@dataclass(frozen=True)
class StoredImage:
    """A named image in the local store."""

    name: str               # normalised: docker.io/library/busybox:latest
    manifest_digest: Digest
    config_digest: Digest
    created: str            # the config's "created" (RFC 3339), "" when it has none
    size: int               # the layers' blob sizes, summed

    @property
    def image_id(self) -> Digest:
        return self.config_digest

    @property
    def dangling(self) -> bool:
        return self.name == DANGLING


class ImageStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def normalize(name: str) -> str:
        from .reference import ImageRef, InvalidReference

        try:
            return str(ImageRef.parse(name))
        except (InvalidReference, ValueError) as exc:
            raise UsageError(f"invalid image name {name!r}: {exc}") from None

    def tag(self, name: str, image: Any) -> None:
        """``name`` now names ``image``. The image it named before is kept dangling (as docker
        keeps the image a rebuild took its tag from), shown as such only once nothing names
        it: deciding that here would mean reading every entry of refs/ on every build."""
        name = self.normalize(name)
        doc = {"manifest": str(image.manifest_digest), "config": str(image.config_digest)}
        held = self.store.get_ref(name) or {}
        if all(held.get(k) == v for k, v in doc.items()):
            return  # already so: rewriting it would only make remembered builds stale
        self.store.put_ref(name, doc)
        self.left_behind(held, doc["config"])

    def left_behind(self, held: dict[str, Any], config: str) -> None:
        """Keep dangling the image a name named (``held``, its old refs/ entry) before it
        came to name the image ``config`` (a tag, a load, an import, a pull)."""
        if held.get("manifest"):
            before = self._config_of(held)  # the same image ID under another manifest stays named
            if before and before != config:
                self._dangle(str(held["manifest"]), before)

    def tag_many(self, names: Sequence[str], image: Any) -> None:
        normalized = [self.normalize(n) for n in names]  # all valid before any is written
        for name in normalized:
            self.tag(name, image)

    def keep(self, names: Sequence[str], image: Any) -> None:
        """Keep a built or loaded image: under ``names``, or dangling when there are none
        (hidden while something else names it); ``refs_of`` says by which refs."""
        if names:
            self.tag_many(names, image)
        else:
            self._dangle(str(image.manifest_digest), str(image.config_digest))

    def refs_of(self, names: Sequence[str], image: Any) -> list[str]:
        """The refs ``keep(names, image)`` keeps the image by (what a replay must find)."""
        if names:
            return [self.normalize(n) for n in names]
        return [_DANGLING_REF + str(image.manifest_digest)]

    def _dangle(self, manifest: str, config: str) -> None:
        ref = _DANGLING_REF + manifest
        doc = {"manifest": manifest, "config": config}
        if self.store.get_ref(ref) != {"name": ref, **doc}:
            # Not synced: no name the user gave (a rebuild that moves a tag writes one, and
            # an fsync there waits for every file the build wrote). A power cut may lose it:
            # the image is then no longer listed, and its blobs wait for cache prune.
            self.store.put_ref(ref, doc, durable=False)

    def _config_of(self, doc: dict[str, Any]) -> str | None:
        """The image ID (config digest) a refs/ entry is for: kept in it, or in its manifest."""
        if isinstance(doc.get("config"), str):
            return str(doc["config"])
        try:
            return str(json.loads(self.store.read_blob(Digest.parse(doc["manifest"])))["config"]["digest"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _refs(self) -> Iterator[tuple[str, str, str]]:
        """(ref, manifest, image ID) of every image entry of refs/: names and dangling
        images (not other memos, nor an entry whose manifest is gone)."""
        for path in sorted((self.store.root / "refs").glob("*.json")):
            try:
                doc = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue  # a damaged or foreign entry is not an image
            if not (isinstance(doc, dict) and isinstance(doc.get("name"), str)
                    and isinstance(doc.get("manifest"), str)):
                continue
            config = self._config_of(doc)
            if config is not None:
                yield doc["name"], doc["manifest"], config

    # -- reading the names ------------------------------------------------------------
    def images(self) -> list[StoredImage]:
        """Every name whose manifest is in the store, and every image without a name (as
        DANGLING), newest first (as `docker images`)."""
        return self._listed(list(self._refs()))

    def _listed(self, refs: list[tuple[str, str, str]]) -> list[StoredImage]:
        """``images()`` of the entries ``refs`` (``_refs()``, read once by the caller)."""
        shown = {image_id for ref, _, image_id in refs if not ref.startswith(_DANGLING_REF)}
        out = []
        for ref, manifest, image_id in refs:
            dangling = ref.startswith(_DANGLING_REF)
            if dangling and image_id in shown:
                continue  # named after all (or already listed): not dangling
            try:
                image = self._describe(DANGLING if dangling else ref, Digest.parse(manifest))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if image is not None:
                out.append(image)
                shown.add(image_id)
        return sorted(out, key=lambda i: (i.created, i.name), reverse=True)

    def _describe(self, name: str, manifest_digest: Digest) -> StoredImage | None:
        if not self.store.has_blob(manifest_digest):
            return None
        manifest = json.loads(self.store.read_blob(manifest_digest))
        config_digest = Digest.parse(manifest["config"]["digest"])
        created = ""
        if self.store.has_blob(config_digest):
            created = str(json.loads(self.store.read_blob(config_digest)).get("created") or "")
        size = sum(int(layer.get("size", 0)) for layer in manifest.get("layers") or [])
        return StoredImage(name, manifest_digest, config_digest, created, size)

    def lookup(self, name: str) -> StoredImage:
        """A stored image by name, or by (a prefix of) its image ID as docker accepts it."""
        found = self.find(name)
        if len(found) == 1:
            return found[0]
        if not found:
            raise BuildError(f"no such image: {name}",
                             hint="see `pybuild images`; build it or `pybuild pull` it first")
        ids = {i.image_id for i in found}
        if len(ids) == 1:
            return found[0]
        raise UsageError(f"{name!r} matches several images: "
                         f"{', '.join(sorted(str(i) for i in ids))}")

    def _named(self, name: str) -> StoredImage | None:
        doc = self.store.get_ref(self.normalize(name))
        if doc and doc.get("manifest"):
            return self._describe(str(doc["name"]), Digest.parse(doc["manifest"]))
        return None

    def by_name(self, name: str) -> StoredImage:
        """A stored image by its name only, as `docker push` finds it: an image ID is no
        name to push to."""
        image = self._named(name)
        if image is None:
            raise BuildError(f"no such image: {name}: an image does not exist locally with that name",
                             hint="push a name (see `pybuild images`); to push an image by its "
                                  "ID, name it first: pybuild tag ID NAME")
        return image

    def find(self, name: str) -> list[StoredImage]:
        """Stored names matching ``name``: the name itself, else an image ID (prefix)."""
        hexpart = name.removeprefix("sha256:").lower()
        is_id = name.startswith("sha256:") or (len(hexpart) >= 4 and all(
            c in "0123456789abcdef" for c in hexpart) and len(hexpart) <= 64 and ":" not in name)
        if not is_id or ("/" in name):
            image = self._named(name)
            if image is not None:
                return [image]
            if not is_id:
                return []
        return [i for i in self.images() if i.image_id.hex.startswith(hexpart)]

    def spec(self, image: StoredImage) -> Any:
        """The ImageSpec of a stored image (its blobs in the store), for push and save."""
        from .oci.image import image_from_manifest
        from .oci.types import ImageFormatError

        try:
            return image_from_manifest(self.store.read_blob(image.manifest_digest),
                                       self.store.layer_file)
        except ImageFormatError as exc:
            raise BuildError(f"image {image.name} is damaged in the store: {exc.message}",
                             hint="build or pull it again") from None

    # -- changing the names ------------------------------------------------------------
    def add_name(self, source: str, target: str) -> str:
        """`pybuild tag SRC DST`: DST names what SRC names (or the image of that ID)."""
        image = self.lookup(source)
        name = self.normalize(target)
        self.tag(name, image)
        return name

    def remove(self, name: str, *, force: bool = False) -> tuple[list[str], list[Digest]]:
        """`pybuild rmi`: forget the names, and the image once none is left (blobs stay until
        the cache is pruned): (names untagged, image IDs deleted). By image ID every name of
        that image goes; several names need ``force``, as in docker."""
        found = self.find(name)
        if not found:
            raise BuildError(f"no such image: {name}", hint="see `pybuild images`")
        by_name = [i for i in found if i.name == _try_normalize(name)]
        targets = by_name or found
        if not by_name and len(targets) > 1 and not force:
            raise BuildError(f"image {name} is referenced by several names "
                             f"({', '.join(i.name for i in targets)})",
                             hint="remove them by name, or use --force")
        refs = list(self._refs())
        untagged = [image.name for image in targets if not image.dangling]
        for ref in untagged:
            self.store.ref_path(ref).unlink(missing_ok=True)
        deleted: list[Digest] = []
        for image_id in dict.fromkeys(image.image_id for image in targets):
            entries = [ref for ref, _, i in refs if i == str(image_id)]
            if all(ref.startswith(_DANGLING_REF) or ref in untagged for ref in entries):
                self._unlink_dangling(refs, {str(image_id)})  # no name is left: deleted
                deleted.append(image_id)
        return untagged, deleted

    def prune(self) -> list[Digest]:
        """`pybuild image prune`: delete every dangling image; their IDs, as `images` lists
        them."""
        refs = list(self._refs())
        deleted = [image.image_id for image in self._listed(refs) if image.dangling]
        self._unlink_dangling(refs, {str(d) for d in deleted})
        return deleted

    def _unlink_dangling(self, refs: list[tuple[str, str, str]], image_ids: set[str]) -> None:
        for ref, _, image_id in refs:
            if image_id in image_ids and ref.startswith(_DANGLING_REF):
                self.store.ref_path(ref).unlink(missing_ok=True)

    def pull(self, name: str, *, insecure: Sequence[str] = (), progress: Any = None,
             platform: str | None = None) -> StoredImage:
        """`pybuild pull NAME`: resolve for ``platform`` (``linux/arm64``; default this
        machine's), fetch the blobs into the store (verified), name the image."""
        from .base import BaseResolver
        from .progress import Progress

        ref_name = self.normalize(name)
        held = self.store.get_ref(ref_name) or {}
        resolver = BaseResolver(self.store, progress=progress or Progress("quiet"),
                                insecure=tuple(insecure))
        base = resolver.resolve(ref_name, pull=True, platform=platform)
        assert base.manifest_digest is not None
        image = self._describe(ref_name, base.manifest_digest)
        assert image is not None
        self.store.put_ref(ref_name, {"manifest": str(image.manifest_digest),
                                      "config": str(image.config_digest)})
        if platform is not None:  # for this machine's, the resolver already has
            self.left_behind(held, str(image.config_digest))  # as docker pull leaves it
        return image


def _try_normalize(name: str) -> str:
    try:
        return ImageStore.normalize(name)
    except UsageError:
        return name


class BlobSources:
    """``blob-sources.json`` in the store: digest -> the ``host/repository`` places the blob
    was pulled from or pushed to, so a push can mount it instead of uploading it."""

    LIMIT = 8  # places kept per blob, newest first

    def __init__(self, store: Store) -> None:
        self.store = store
        self.path = store.root / "blob-sources.json"

    def get(self, digest: Digest) -> list[str]:
        return list(self._read().get(str(digest), []))

    def add(self, entries: Iterable[tuple[Digest, str]]) -> None:
        entries = list(entries)
        if not entries:
            return
        with self.store.lock("blob-sources"):
            doc = self._read()
            for digest, where in entries:
                places = [p for p in doc.get(str(digest), []) if p != where]
                doc[str(digest)] = [where, *places][:self.LIMIT]
            tmp = self.store.tempfile(".sources-")
            tmp.write_bytes(canonical_json(doc))
            os.replace(tmp, self.path)

    def _read(self) -> dict[str, list[str]]:
        try:
            doc = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}


def push_stored(store: Store, name: str, targets: Sequence[str] = (), *, insecure: Sequence[str] = (),
                chunk_size: int | None = None, jobs: int = 4,
                report: Callable[[str], None] = lambda line: None, image: Any = None,
                as_is: bool = False) -> list[Any]:
    """Push the stored image ``name`` (or ``image``, an ImageSpec) to every name in ``targets``
    (default: ``name`` itself), recording where its blobs now are. ``as_is``: push ``image``
    exactly as it is (an index names its manifest: no layer may be compressed on the way)."""
    from .oci.push import DEFAULT_CHUNK, push_image
    from .oci.registry import Registry
    from .reference import ImageRef

    stored = image is None
    if image is None:
        image = ImageStore(store).spec(ImageStore(store).by_name(name))
    compressed = image if as_is else _compressed(store, image)
    if stored and compressed is not image:
        # The same image (same config, same ID) in the form registries get; the local name
        # now points at it, so what `inspect` shows is what was pushed.
        ImageStore(store).tag(name, compressed)
    image = compressed
    refs = [ImageRef.parse(ImageStore.normalize(t)) for t in (targets or [name])]
    sources = BlobSources(store)
    seen: list[tuple[Digest, str]] = []
    registries: dict[str, Registry] = {}

    def registry_for(host: str) -> Registry:
        if host not in registries:
            registries[host] = Registry(host, insecure_registries=insecure, pool=jobs + 2)
        return registries[host]

    try:
        return push_image(image, refs, registry_for=registry_for, sources=sources.get,
                          record=lambda d, where: seen.append((d, where)),
                          chunk_size=chunk_size or DEFAULT_CHUNK, jobs=jobs, report=report)
    finally:
        sources.add(seen)


def _compressed(store: Store, image: Any) -> Any:
    """The image as a registry should get it: layers kept uncompressed in the store (an
    imported root filesystem) are sent gzip-compressed, as docker push does; the config,
    and so the image ID, stay the same."""
    from .cache.store import LayerBlob
    from .export import ensure_layer_blob
    from .layers.types import MEDIA_TYPE_TAR
    from .oci.image import build_image
    from .oci.types import Descriptor, MediaType
    from .solve import LayerRef

    plain = {MEDIA_TYPE_TAR, MediaType.DOCKER_LAYER}
    if not any(d.media_type in plain for d in image.layers):
        return image
    layers = []
    for desc, diff_id in zip(image.layers, image.config.diff_ids):
        blob = LayerBlob(diff_id, desc.digest, desc.size, desc.media_type)
        if desc.media_type in plain:
            blob = ensure_layer_blob(store, LayerRef(diff_id, blob), compression="gzip", level=None,
                                     source_date_epoch=None)
        layers.append((Descriptor(blob.media_type, blob.digest, blob.size), None))
    media = "docker" if image.manifest.media_type == MediaType.DOCKER_MANIFEST else "oci"
    return build_image(image.config, layers, blob_dir=store.root / "blobs", media=media,
                       annotations=image.manifest.annotations,  # --annotation's, kept
                       blob_source=store.layer_file)


# -- docker's way of printing sizes and ages (go-units) ----------------------------------

def human_size(size: float) -> str:
    """docker's HumanSizeWithPrecision(size, 3): decimal units, three significant digits."""
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.3g}{units[i]}"


def human_duration(seconds: float) -> str:
    """docker's HumanDuration: "Less than a second", "About a minute", "3 days", ..."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def created_ago(created: str, now: _dt.datetime | None = None) -> str:
    import datetime as _dt  # `pybuild images` reads times; a build does not: not at import

    if not created:
        return "N/A"
    try:
        when = _dt.datetime.fromisoformat(created)
    except ValueError:
        return "N/A"
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    now = now or _dt.datetime.now(_dt.UTC)
    return human_duration((now - when).total_seconds()) + " ago"


def images_table(images: Sequence[StoredImage], now: _dt.datetime | None = None) -> str:
    """The table `docker images` prints (tabwriter: min width 10, padding 3)."""
    from .reference import ImageRef

    rows = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")]
    for image in images:
        if image.dangling:
            repo, tag = "<none>", "<none>"
        else:
            ref = ImageRef.parse(image.name)
            repo, tag = ImageRef(ref.registry, ref.repository, None, None).familiar(), ref.tag or "<none>"
        rows.append((repo, tag, image.image_id.short, created_ago(image.created, now),
                     human_size(image.size)))
    widths = [max(10, max(len(r[i]) for r in rows) + 3) for i in range(4)]
    return "\n".join("".join(c.ljust(w) for c, w in zip(r, widths)) + r[4] for r in rows) + "\n"


def import_rootfs(store: Store, source: str, name: str, *, message: str | None = None,
                  platform: str | None = None) -> Any:
    """`pybuild import`: one layer made from a root filesystem (a folder or a tar), like
    `docker import`; the image is stored under ``name``, for ``platform`` (``linux/arm64``;
    default this machine's)."""
    from .cache.keys import base_key
    from .cache.store import LayerBlob
    from .config import HistoryEntry, ImageState
    from .export import make_image
    from .layers.tar import write_layer
    from .solve import FsState, LayerRef, StageResult

    normalized = ImageStore.normalize(name)
    path = Path(source)
    if not path.exists():
        raise UsageError(f"cannot import {source}: no such file or folder")
    if path.is_dir():
        out = store.tempfile("layer-")
        rec = write_layer(path, out, compression="gzip")
        diff_id, digest, size, media = rec.diff_id, rec.digest, rec.size, rec.media_type
        store.put_blob_file(out, digest)
    else:
        diff_id, digest, size, media = _tar_as_layer(store, path, source)
    blob = LayerBlob(diff_id, digest, size, media)
    store.add_layer_blob(blob)
    import datetime as _dt

    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    state = ImageState(history=(HistoryEntry("", empty_layer=False, comment=message or
                                             f"Imported from {path.name}", created=now),))
    result = StageResult(stage=None, fs=FsState(base_key(manifest_digest=None),  # type: ignore[arg-type]
                                                (LayerRef(diff_id, blob),)),
                         image=state, base=None, platform=platform)
    # Kept as it came; a build or an export compresses it when it needs to.
    image = make_image(store, result, compression="uncompressed")
    ImageStore(store).tag(normalized, image)
    return image


def _tar_as_layer(store: Store, path: Any, source: str) -> tuple[Any, Any, int, str]:
    """A root filesystem tar becomes the layer as it is (as `docker import` does): one pass
    that decompresses it and hashes it. It is kept uncompressed (its digest is its diff_id);
    an export compresses it once, when it is first asked for."""
    import hashlib
    import tarfile

    from .digest import Digest
    from .layers.compress import CompressingWriter, open_decompressed

    try:
        with tarfile.open(path) as probe:
            probe.next()
    except (tarfile.TarError, OSError) as exc:
        from .imagearchive import tar_open_problem

        raise UsageError(f"cannot import {source}: {tar_open_problem(exc)}") from None
    out = store.tempfile("layer-")
    h = hashlib.sha256()
    with open(path, "rb") as raw, open_decompressed(raw) as tar, open(out, "wb") as blob:
        with CompressingWriter(blob, "uncompressed") as writer:
            while chunk := tar.read(1 << 20):
                h.update(chunk)
                writer.write(chunk)
        media = writer.media_type
    digest, size = store.put_blob_file(out)
    return Digest.sha256(h.hexdigest()), digest, size, media
