"""Base images: where a FROM (or COPY --from an image) gets its layers and config.

In order: a named build context (`--build-context NAME=oci-layout://DIR[:TAG]`,
`docker-image://REF`, a folder, or a git or http(s) URL, fetched to a folder first), an
image already in the local store (built or pulled before; no network request unless
`--pull`), or the registry the reference names. Every blob is verified against its digest
before it enters the store.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cache.keys import CacheKey, base_key
from .cache.store import LayerBlob, Store
from .digest import Digest
from .errors import BuildError, RegistryError, UsageError
from .progress import Progress

__all__ = ["BaseImage", "BaseResolver", "NamedContext", "load_stored_image", "parse_named_contexts"]


@dataclass(frozen=True)
class NamedContext:
    """A --build-context value: a name and what it stands for."""

    name: str
    # "oci-layout" | "docker-image" | "scratch" (docker-image://scratch) | "dir" | "url" (git
    # or http(s), not yet fetched)
    kind: str
    value: str  # the folder, the image reference, or the URL
    tag: str | None = None


def _remote(value: str) -> bool:
    from .remotecontext import context_kind

    return context_kind(value) in ("git", "http")


# what else buildx's urlutil.IsGitURL takes as a git repository in a --build-context value
_NAMED_URL_PREFIXES = ("git@", "github.com/")


def _url_like(value: str) -> bool:
    """Whether a --build-context value is given as a URL (not an image, not a folder)."""
    return not value.startswith(("docker-image://", "oci-layout://")) and not Path(value).is_dir() \
        and ("://" in value or value.startswith(_NAMED_URL_PREFIXES))


def is_url_context(value: str) -> bool:
    """Whether a --build-context value is a git repository or an http(s) URL to fetch."""
    return _url_like(value) and _remote(value)


def parse_named_contexts(values: Mapping[str, str]) -> dict[str, NamedContext]:
    out: dict[str, NamedContext] = {}
    for name, value in values.items():
        key = name.lower()
        if value.startswith("oci-layout://"):
            rest = value[len("oci-layout://"):]
            tag = None
            if "@" in rest:
                rest, tag = rest.split("@", 1)
            elif ":" in Path(rest).name:
                rest, tag = rest.rsplit(":", 1)
            path = Path(rest).resolve()
            if not (path / "index.json").is_file():
                raise UsageError(f"--build-context {name}: {path} is not an OCI layout (no index.json)")
            out[key] = NamedContext(key, "oci-layout", str(path), tag)
        elif value.startswith("docker-image://"):
            ref = value[len("docker-image://"):]
            # dockerui: the name "scratch" is the empty image, not a registry's "scratch"
            out[key] = NamedContext(key, "scratch" if ref == "scratch" else "docker-image", ref)
        elif _url_like(value):
            if not _remote(value):
                raise UsageError(f"--build-context {name}={value}: only oci-layout://, docker-image://, "
                                 "a git repository, an http(s) URL and local folders are supported")
            # fetched before the build starts (builder.build); a folder from then on
            out[key] = NamedContext(key, "url", value)
        else:
            path = Path(value).resolve()
            if not path.is_dir():
                raise UsageError(f"--build-context {name}: folder {value} not found")
            out[key] = NamedContext(key, "dir", str(path))
    return out


@dataclass(frozen=True)
class BaseImage:
    """A stage's base, resolved: its name, cache key, config and layers."""

    name: str
    key: CacheKey
    config: Mapping[str, Any]
    layers: tuple[LayerBlob, ...]
    manifest_digest: Digest | None = None
    resolved_digest: Digest | None = None  # the index the name resolved to, when it was one


def load_stored_image(store: Store, manifest_digest: Digest) -> tuple[dict[str, Any], list[LayerBlob]] | None:
    """Config and layers of an image whose manifest is in the store, if every blob is there."""
    if not store.has_blob(manifest_digest):
        return None
    manifest = json.loads(store.read_blob(manifest_digest))
    config_digest = Digest.parse(manifest["config"]["digest"])
    if not store.has_blob(config_digest):
        return None
    config = json.loads(store.read_blob(config_digest))
    diff_ids = [Digest.parse(d) for d in config.get("rootfs", {}).get("diff_ids", [])]
    layers = []
    for desc, diff_id in zip(manifest.get("layers", []), diff_ids):
        digest = Digest.parse(desc["digest"])
        if not store.has_blob(digest) and not store.has_snapshot(diff_id):
            return None
        layers.append(LayerBlob(diff_id, digest, int(desc["size"]), desc["mediaType"]))
    return config, layers


class BaseResolver:
    def __init__(self, store: Store, *, progress: Progress, insecure: tuple[str, ...] = (),
                 contexts: Mapping[str, NamedContext] | None = None,
                 context_root: Path | None = None) -> None:
        self.store = store
        self.progress = progress
        self.insecure = insecure
        self.contexts = dict(contexts or {})
        self.context_root = context_root
        self._lock = threading.Lock()
        self._resolved: dict[tuple[str, bool], BaseImage] = {}
        # What a replay of this build must find unchanged (``builder.warm``): the names
        # read from the store and their manifests; and whether anything came from elsewhere.
        self.refs_read: list[tuple[str, Digest]] = []
        self.watch: list[Path] = []  # other files read (an OCI layout's index and manifest)
        self.fetched = False

    def resolve(self, name: str, *, kind: str = "image", platform: str | None = None,
                pull: bool = False) -> BaseImage:
        """``platform``: the one to resolve an image for (``linux/arm64``); None, or this
        machine's, is this machine's."""
        wanted = foreign_platform(platform)
        with self._lock:
            cache_key = (name.lower() if kind == "context" else name, pull, str(wanted))
            if cache_key not in self._resolved:
                if kind == "context":
                    image = self._from_context(self.contexts[name.lower()], pull, wanted)
                else:
                    image = self._from_reference(name, pull, wanted)
                if (image.config.get("config") or {}).get("OnBuild"):
                    self.fetched = True  # its triggers may ADD from anywhere: never replayed
                self._resolved[cache_key] = image
            return self._resolved[cache_key]

    # -- named contexts ---------------------------------------------------------------
    def is_scratch(self, name: str) -> bool:
        """Whether the named context ``name`` is ``docker-image://scratch``: a stage on it
        starts from scratch, as ``FROM scratch``."""
        nc = self.contexts.get(name.lower())
        return nc is not None and nc.kind == "scratch"

    def _from_context(self, nc: NamedContext, pull: bool, platform: Any) -> BaseImage:
        if nc.kind == "scratch":  # nothing to copy from (COPY --from of it finds no file)
            return BaseImage("scratch", base_key(manifest_digest=None), {}, ())
        if nc.kind == "docker-image":
            return self._from_reference(nc.value, pull, platform)
        if nc.kind == "oci-layout":
            from .oci.layout import OciLayout

            layout = OciLayout(nc.value)
            resolved = layout.resolve(nc.tag, platform=platform)
            # a replay must see the layout's tags and the image they name unchanged
            self.watch += [Path(nc.value) / "index.json", layout.blob_path(resolved.manifest_digest)]
            return self._adopt(f"oci-layout://{nc.value}", resolved, layout.blob_path)
        self.fetched = True  # a folder is read whole each build: never replayed
        return self._from_folder(nc)

    def _from_folder(self, nc: NamedContext) -> BaseImage:
        """A folder as a base: one layer holding its files. The layer is kept uncompressed
        (only hashed: a root filesystem folder is large) and compressed when exported."""
        from .layers.tar import write_layer

        tmp = self.store.tempfile("layer-")
        rec = write_layer(Path(nc.value), tmp, compression="uncompressed")
        self.store.put_blob_file(tmp, rec.digest)
        blob = LayerBlob(rec.diff_id, rec.digest, rec.size, rec.media_type)
        self.store.add_layer_blob(blob)
        # one history entry for its one layer, so that history and layers stay in step
        config: dict[str, Any] = {
            "rootfs": {"type": "layers", "diff_ids": [str(rec.diff_id)]},
            "history": [{"created_by": f"build context {nc.name} (a folder)",
                         "comment": "pybuild.context.v0"}]}
        return BaseImage(nc.name, base_key(manifest_digest=None, layers=[str(rec.diff_id)]),
                         config, (blob,))

    # -- references: the local store, then the registry --------------------------------
    def _from_reference(self, name: str, pull: bool, platform: Any = None) -> BaseImage:
        """``platform``: another than this machine's. The stored image of that name is used
        when it is for that platform; otherwise the registry is asked, and the name in the
        store is left to this machine's image."""
        from .reference import ImageRef, InvalidReference

        try:
            ref = ImageRef.parse(name)
        except (InvalidReference, ValueError) as exc:
            raise BuildError(f"invalid base image name {name!r}: {exc}") from None
        stored_for = None  # the platform of a stored image of that name that did not fit
        if not pull:
            doc = self.store.get_ref(str(ref))
            if doc and doc.get("manifest"):
                digest = Digest.parse(doc["manifest"])
                loaded = load_stored_image(self.store, digest)
                if loaded is not None and (platform is None or is_for(loaded[0], platform)):
                    config, layers = loaded
                    self.refs_read.append((str(ref), digest))
                    top = Digest.parse(doc["index"]) if doc.get("index") else None
                    return BaseImage(str(ref), base_key(manifest_digest=str(digest)), config,
                                     tuple(layers), digest, top)
                if loaded is not None:
                    from .hostplatform import config_platform

                    stored_for = config_platform(loaded[0])
        try:
            return self._pull(ref, platform)
        except BuildError as exc:
            if stored_for:
                exc.hint = (f"the local store has {ref.familiar()} for {stored_for} only, and the "
                            f"build needs it for {platform}")
            raise

    def _pull(self, ref: Any, platform: Any = None) -> BaseImage:
        self.fetched = True
        from .oci.registry import resolve_for_pull
        from .oci.types import Descriptor

        sid = self.progress.start(f"[internal] load metadata for {ref}")
        try:
            # ``there``: the reference as the registry that answered names it (a mirror)
            registry, there, resolved = resolve_for_pull(ref, insecure_registries=self.insecure,
                                                         platform=platform)
        except RegistryError as exc:
            self.progress.error(sid, str(exc))
            raise
        self.progress.internal_done(sid)

        def fetch(digest: Digest) -> Path:
            path = self.store.blob_path(digest)
            if not path.exists():
                desc = next(d for d in resolved.manifest.layers if d.digest == digest)
                registry.fetch_blob(there, Descriptor(desc.media_type, desc.digest, desc.size), path)
            return path

        image = self._adopt(str(ref), resolved, fetch)
        if platform is None:  # the name in the store stays this machine's image
            doc = {"manifest": str(resolved.manifest_digest)}
            if resolved.resolved_digest is not None:  # for provenance: what the tag named
                doc["index"] = str(resolved.resolved_digest)
            held = self.store.get_ref(str(ref)) or {}
            self.store.put_ref(str(ref), doc)
            if held.get("manifest") not in (None, doc["manifest"]):
                # A tag that moved (`FROM` with --pull, `pybuild pull`): the image it named
                # stays, dangling, as docker pull and buildah leave it.
                from .images import ImageStore

                ImageStore(self.store).left_behind(held, str(resolved.manifest.config.digest))
        from .images import BlobSources  # where the blobs came from, for mounts on push

        where = f"{there.api_host}/{there.repository}"
        BlobSources(self.store).add([(d.digest, where) for d in
                                     (resolved.manifest.config, *resolved.manifest.layers)])
        return image

    def _adopt(self, name: str, resolved: Any, blob_source: Any) -> BaseImage:
        """Bring a resolved image's blobs into the store (verified) and describe it."""
        self.store.put_blob_bytes(resolved.manifest_bytes)
        self.store.put_blob_bytes(resolved.config_bytes)
        config = json.loads(resolved.config_bytes)
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        layers = []
        for desc, diff_id in zip(resolved.manifest.layers, diff_ids):
            if not self.store.has_blob(desc.digest):
                src = Path(blob_source(desc.digest))
                if src != self.store.blob_path(desc.digest):
                    tmp = self.store.tempfile("blob-")
                    import shutil

                    shutil.copyfile(src, tmp)
                    self.store.put_blob_file(tmp, desc.digest)
            blob = LayerBlob(Digest.parse(diff_id), desc.digest, desc.size, desc.media_type)
            self.store.add_layer_blob(blob)
            layers.append(blob)
        return BaseImage(name, base_key(manifest_digest=str(resolved.manifest_digest)), config,
                         tuple(layers), resolved.manifest_digest, resolved.resolved_digest)


def foreign_platform(platform: str | None) -> Any:
    """``platform`` (``linux/arm64``) as an oci.types.Platform when it is not this machine's;
    None for this machine's."""
    from .hostplatform import format_platform, host_build_platform

    if not platform or platform == format_platform(host_build_platform()):
        return None
    from .oci.types import Platform

    return Platform.parse(platform)


def is_for(config: Mapping[str, Any], platform: Any) -> bool:
    """Whether an image config is for ``platform`` (an oci.types.Platform)."""
    from .oci.types import Platform

    have = Platform(str(config.get("os") or ""), str(config.get("architecture") or ""),
                    str(config.get("variant") or ""))
    return bool(have.os and have.architecture) and have.matches(platform)
