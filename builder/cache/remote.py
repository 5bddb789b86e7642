"""Sharing the build cache between machines: ``--cache-to`` and ``--cache-from``.

The cache travels as one OCI artifact (an image manifest whose config lists the cache
records and whose layers are the layer blobs, plus one tar.gz per cache mount with
``mounts=true``), pushed to a registry (``type=registry,ref=REF``) or written into an OCI
layout (``type=local,dest=DIR``). ``docs/cache-keys.md`` ("Sharing the cache") describes
the format.

Importing reads only the manifest and config up front. A record is taken into the local
index only when a step asks for its key: then its blob is fetched (verified), unpacked
into a snapshot (its diff_id checked) and the record written last, as a step's own result
is, so a machine downloads only the layers of the steps it actually reuses.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cachemount import folder, locked
from ..digest import Digest, canonical_json, sha256_bytes
from ..errors import BuildError, CacheError, UsageError
from .store import LayerBlob, Store, remove_tree

__all__ = ["ARTIFACT_TYPE", "CONFIG_MEDIA_TYPE", "MOUNT_MEDIA_TYPE", "CacheImport", "CacheSpec",
           "export_cache", "open_imports", "parse_cache_spec"]

ARTIFACT_TYPE = "application/vnd.pybuild.cache.v1"
CONFIG_MEDIA_TYPE = "application/vnd.pybuild.cache.config.v1+json"
MOUNT_MEDIA_TYPE = "application/vnd.pybuild.cache.mount.v1.tar+gzip"
FORMAT = "pybuild.cache-export.v1"
MOUNT_ID = "dev.pybuild.cache.mount.id"
_RECORD_FIELDS = ("diff_id", "digest", "size", "media_type", "empty", "created", "step", "stage")
_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """One ``--cache-to`` / ``--cache-from`` value, as buildx spells them."""

    kind: str               # "registry" | "local"
    location: str           # the reference (registry) or the layout folder (local)
    tag: str = "latest"     # the layout's ref name (local)
    mode: str = "min"       # export: "min" (the final image's chain) or "max" (every stage)
    mounts: bool = False    # export the cache mounts; import: restore them (default when present)

    @property
    def where(self) -> str:
        return self.location if self.kind == "registry" else f"{self.location}:{self.tag}"


def parse_cache_spec(opts: Mapping[str, str], *, export: bool) -> CacheSpec:
    """``{"type": "registry", "ref": ...}`` and friends -> a CacheSpec, or a UsageError."""
    flag = "--cache-to" if export else "--cache-from"
    kind = opts.get("type", "registry")
    text = ",".join(f"{k}={v}" for k, v in opts.items())
    mode = opts.get("mode", "min")
    if mode not in ("min", "max"):
        raise UsageError(f"invalid {flag} {text!r}: mode must be min or max")
    mounts = opts.get("mounts", "false" if export else "true").lower() in ("true", "1", "yes")
    if kind == "registry":
        ref = opts.get("ref", "")
        if not ref:
            raise UsageError(f"invalid {flag} {text!r}: ref= is required for type=registry")
        from ..reference import ImageRef

        try:
            ImageRef.parse(ref)
        except ValueError as exc:
            raise UsageError(f"invalid {flag} {text!r}: {exc}") from None
        return CacheSpec("registry", ref, mode=mode, mounts=mounts)
    if kind == "local":
        key = "dest" if export else "src"
        path = opts.get(key, "")
        if not path:
            raise UsageError(f"invalid {flag} {text!r}: {key}= is required for type=local")
        return CacheSpec("local", os.path.abspath(path), tag=opts.get("tag") or "latest",
                         mode=mode, mounts=mounts)
    raise UsageError(f"invalid {flag} {text!r}: type must be registry or local",
                     hint="e.g. type=registry,ref=HOST/REPO:cache or type=local,"
                          + ("dest=DIR" if export else "src=DIR"))


def mount_dir(store_root: Path, cache_id: str) -> Path:
    """Where a RUN --mount=type=cache folder lives (``cache_id``: the name
    builder.cachemount.cache_name gives it)."""
    return folder(store_root, cache_id)




# ------------------------------------------------------------------ sources and sinks

class _Source:
    """Where an artifact is read from: a registry repository or an OCI layout."""

    def __init__(self, spec: CacheSpec, insecure: Sequence[str]) -> None:
        self.spec = spec
        self._registry: Any = None
        self._ref: Any = None
        if spec.kind == "registry":
            from ..oci.registry import Registry
            from ..reference import ImageRef

            self._ref = ImageRef.parse(spec.location)
            self._insecure = tuple(insecure)
            self._registry = Registry(self._ref.api_host, insecure_registries=self._insecure)

    def manifest(self) -> bytes:
        if self._registry is not None:
            # through the registry's mirrors first, as BuildKit's cache importer resolves;
            # the blobs then come from the place that answered
            from ..oci.registry import first_answer

            self._registry, self._ref, (data, _, _) = first_answer(
                self._ref, lambda registry, ref: registry.get_manifest(ref, ref.manifest_reference),
                insecure_registries=self._insecure)
            return data  # type: ignore[no-any-return]
        from ..oci.layout import OciLayout, select_entry

        layout = OciLayout(self.spec.location)
        entry = select_entry(layout.index(), self.spec.tag, f"OCI layout {self.spec.location}")
        return self._local(entry.digest).read_bytes()

    def read(self, desc: Any) -> bytes:
        if self._registry is not None:
            return self._registry.read_blob(self._ref, desc)  # type: ignore[no-any-return]
        data = self._local(desc.digest).read_bytes()
        if sha256_bytes(data) != desc.digest:
            raise CacheError(f"{self.spec.where}: blob {desc.digest} does not match its digest")
        return data

    def fetch(self, desc: Any, dest: Path) -> None:
        """The blob into ``dest`` (a file in the store's tmp/); verified by the store after."""
        if self._registry is not None:
            self._registry.fetch_blob(self._ref, desc, dest)
            return
        shutil.copyfile(self._local(desc.digest), dest)

    def _local(self, digest: Digest) -> Path:
        path = Path(self.spec.location) / "blobs" / digest.algorithm / digest.hex
        if not path.is_file():
            raise CacheError(f"{self.spec.where}: blob {digest} is missing")
        return path


@dataclass(frozen=True)
class CacheArtifact:
    """The artifact to export. It offers what builder.oci.push.push_image and
    builder.oci.layout.write_layout read of an ImageSpec (manifest, its bytes and digest,
    its descriptor, the blobs), so both sinks are reused as they are."""

    manifest: Any
    manifest_bytes: bytes
    config_bytes: bytes
    layer_files: Mapping[Digest, Path] = field(repr=False)

    @property
    def manifest_digest(self) -> Digest:
        return sha256_bytes(self.manifest_bytes)

    def manifest_descriptor(self, annotations: Mapping[str, str] | None = None) -> Any:
        from ..oci.types import Descriptor

        return Descriptor(_OCI_MANIFEST, self.manifest_digest, len(self.manifest_bytes),
                          annotations=dict(annotations or {}), extra={"artifactType": ARTIFACT_TYPE})

    def blobs(self) -> Iterable[tuple[Any, bytes | Path]]:
        yield self.manifest.config, self.config_bytes
        for desc in self.manifest.layers:
            yield desc, self.layer_files[desc.digest]


# ------------------------------------------------------------------------------ import

@dataclass(frozen=True, slots=True)
class _Entry:
    """One cache record of an imported cache, with where it came from."""

    record: Mapping[str, Any]
    source: _Source
    layer: Any  # the layer's Descriptor in the artifact (None for an empty record)


class CacheImport:
    """The records the ``--cache-from`` artifacts offer, taken into the store on demand."""

    def __init__(self, store: Store, entries: Mapping[str, _Entry],
                 warn: Callable[[str], None]) -> None:
        self.store = store
        self.entries = dict(entries)
        self.warn = warn
        self.fetched: list[Digest] = []  # layer blobs this build downloaded
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.entries)

    def record(self, key: Digest) -> dict[str, Any] | None:
        """The imported record of ``key`` once its layer is in the store (blob fetched and
        verified, snapshot unpacked and its diff_id checked) and the record written into the
        local index; None when no artifact has it or its layer cannot be had."""
        entry = self.entries.get(key.hex)
        if entry is None:
            return None
        record = {k: entry.record[k] for k in _RECORD_FIELDS if k in entry.record}
        record["imported"] = entry.source.spec.where
        if not record.get("empty"):
            try:
                self._take_layer(record, entry)
            except BuildError as exc:
                self.warn(f"cache from {entry.source.spec.where}: step {key.short} not reused: "
                          f"{exc.message}")
                return None
        self.store.put_record(key, record)
        return record

    def _take_layer(self, record: Mapping[str, Any], entry: _Entry) -> None:
        from ..layerstore import ensure_snapshot
        from ..solve import LayerRef
        from .store import LayerBlob

        digest = Digest.parse(record["digest"])
        blob = LayerBlob(Digest.parse(record["diff_id"]), digest, int(record["size"]),
                         str(record["media_type"]))
        with self.store.lock(f"fetch-{digest.hex}"):
            if not self.store.has_blob(digest):
                tmp = self.store.tempfile("fetch-")
                try:
                    entry.source.fetch(entry.layer, tmp)
                    self.store.put_blob_file(tmp, digest)
                finally:
                    tmp.unlink(missing_ok=True)
                with self._lock:
                    self.fetched.append(digest)
            self.store.add_layer_blob(blob)
        ensure_snapshot(self.store, LayerRef(blob.diff_id, blob))


def open_imports(store: Store, specs: Sequence[Mapping[str, str]], *, insecure: Sequence[str] = (),
                 progress: Any) -> CacheImport | None:
    """Read every ``--cache-from`` artifact's manifest and config (a source that cannot be
    read is warned about and skipped, as buildx does) and restore its cache mounts that are
    missing or empty here. The first source to offer a key wins."""
    if not specs:
        return None
    entries: dict[str, _Entry] = {}
    for opts in specs:
        spec = parse_cache_spec(opts, export=False)
        sid = progress.start(f"[internal] importing cache from {spec.where}")
        try:
            source = _Source(spec, insecure)
            found = _read_artifact(source)
        except (BuildError, OSError) as exc:
            message = exc.message if isinstance(exc, BuildError) else str(exc)
            progress.internal_done(sid)
            progress.warn(f"cannot import cache from {spec.where}: {message}")
            continue
        manifest, config = found
        layers = {d.digest: d for d in manifest.layers}
        for key, record in (config.get("records") or {}).items():
            hexd = key.split(":", 1)[-1]
            if hexd in entries or not isinstance(record, dict):
                continue
            layer = None if record.get("empty") else layers.get(_digest_or_none(record.get("digest")))
            if layer is None and not record.get("empty"):
                continue  # its blob is not in the artifact: nothing to reuse
            entries[hexd] = _Entry(record, source, layer)
        if spec.mounts:
            _restore_mounts(store, source, config.get("mounts") or {}, layers, progress.warn)
        progress.internal_done(sid)
    return CacheImport(store, entries, progress.warn)


def _digest_or_none(text: Any) -> Digest | None:
    try:
        return Digest.parse(str(text))
    except ValueError:
        return None


def _read_artifact(source: _Source) -> tuple[Any, dict[str, Any]]:
    from ..oci.types import Manifest, decode, parse_manifest_or_index

    manifest = parse_manifest_or_index(source.manifest())
    if not isinstance(manifest, Manifest) or manifest.config.media_type != CONFIG_MEDIA_TYPE:
        raise CacheError(f"{source.spec.where} is not a pybuild cache (its config is "
                         f"{getattr(getattr(manifest, 'config', None), 'media_type', 'an index')})")
    config = decode(source.read(manifest.config), f"{source.spec.where}: cache config")
    if config.get("format") != FORMAT:
        raise CacheError(f"{source.spec.where}: unknown cache format {config.get('format')!r}",
                         hint=f"this pybuild reads {FORMAT}")
    return manifest, config


def _restore_mounts(store: Store, source: _Source, mounts: Mapping[str, Any],
                    layers: Mapping[Digest, Any], warn: Callable[[str], None]) -> None:
    """Unpack each exported cache mount whose folder is missing or empty here (a folder
    this machine already filled is its own and is left alone)."""
    from ..digest import sha256_file
    from ..layers.unpack import unpack_blob

    for cache_id, info in mounts.items():
        desc = layers.get(_digest_or_none((info or {}).get("digest")))
        folder = mount_dir(store.root, cache_id)
        if desc is None or (folder.is_dir() and any(os.scandir(folder))):
            continue
        tmp = store.tempfile("mount-")
        part = store.tempdir("mount-")
        try:
            source.fetch(desc, tmp)
            if sha256_file(tmp) != (desc.digest, desc.size):
                raise CacheError(f"blob {desc.digest} does not match its digest")
            unpack_blob(tmp, part, mode="apply")
            os.chmod(part, int(info.get("mode", 0o755)))
            with contextlib.suppress(OSError):
                os.chown(part, int(info.get("uid", 0)), int(info.get("gid", 0)))
            with locked(folder):
                if folder.is_dir() and not any(os.scandir(folder)):
                    folder.rmdir()
                if not folder.exists():
                    os.rename(part, folder)
        except (BuildError, OSError) as exc:
            warn(f"cache mount {cache_id!r} from {source.spec.where} not restored: "
                 f"{getattr(exc, 'message', exc)}")
        finally:
            tmp.unlink(missing_ok=True)
            remove_tree(part)


# ------------------------------------------------------------------------------ export

def chain_stages(graph: Any) -> set[str]:
    """Display names of the target stage and the stages it is built FROM (mode=min)."""
    names = set()
    index: int | None = graph.target
    while index is not None:
        stage = graph.stage(index)
        names.add(stage.display_name)
        index = stage.base.stage if stage.base.kind == "stage" else None
    return names


def export_records(store: Store, steps: Sequence[Any], stages: set[str] | None) -> dict[str, dict[str, Any]]:
    """key -> record for this build's steps (of ``stages`` only, unless None)."""
    out: dict[str, dict[str, Any]] = {}
    for step in steps:
        if stages is not None and step.stage not in stages:
            continue
        record = store.get_record(Digest.parse(step.key))
        if record is None:
            continue
        if not record.get("empty") and not store.has_layer(Digest.parse(record["digest"])):
            continue
        out[step.key] = {k: record[k] for k in _RECORD_FIELDS if k in record}
    return out


def _mount_tar(store: Store, cache_id: str) -> tuple[Path, Digest, int, dict[str, int]] | None:
    """A tar.gz of one cache mount's folder (in the store's tmp/), its digest, size and the
    folder's mode and owner; None when the folder is not there."""
    from ..digest import sha256_file
    from ..layers.tar import write_tree_tar

    folder = mount_dir(store.root, cache_id)
    if not folder.is_dir():
        return None
    out = store.tempfile("mount-")
    with locked(folder), open(out, "wb") as f:
        st = os.stat(folder)
        # mtime 0 and no name in the gzip header: unchanged content gives the same blob.
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
            write_tree_tar(folder, gz)  # type: ignore[arg-type]
    digest, size = sha256_file(out)
    return out, digest, size, {"mode": st.st_mode & 0o7777, "uid": st.st_uid, "gid": st.st_gid}


def _compressed_record(store: Store, record: Mapping[str, Any]) -> Mapping[str, Any]:
    """The record as it travels: a layer the store keeps as a plain tar (what steps make)
    is sent gzip-compressed, made once from that tar and kept."""
    from ..export import ensure_layer_blob
    from ..layers.compress import media_type_for
    from ..solve import LayerRef

    if record.get("empty") or record.get("media_type") != media_type_for("uncompressed"):
        return record
    diff_id = Digest.parse(record["diff_id"])
    plain = LayerBlob(diff_id, Digest.parse(record["digest"]), int(record["size"]),
                      str(record["media_type"]))
    blob = ensure_layer_blob(store, LayerRef(diff_id, plain), compression="gzip", level=None,
                             source_date_epoch=None)
    return {**record, "digest": str(blob.digest), "size": blob.size, "media_type": blob.media_type}


def build_artifact(store: Store, records: Mapping[str, Mapping[str, Any]],
                   mounts: Sequence[str], temps: list[Path]) -> CacheArtifact:
    from ..oci.types import Descriptor, Manifest, encode

    layers: dict[Digest, Any] = {}
    files: dict[Digest, Path] = {}
    records = {key: _compressed_record(store, record) for key, record in records.items()}
    for record in records.values():
        if record.get("empty"):
            continue
        digest = Digest.parse(record["digest"])
        layers[digest] = Descriptor(str(record["media_type"]), digest, int(record["size"]))
        files[digest] = store.blob_path(digest)
    mount_doc: dict[str, Any] = {}
    for cache_id in sorted(set(mounts)):
        made = _mount_tar(store, cache_id)
        if made is None:
            continue
        path, digest, size, meta = made
        temps.append(path)
        mount_doc[cache_id] = {"digest": str(digest), "size": size, **meta}
        layers.setdefault(digest, Descriptor(MOUNT_MEDIA_TYPE, digest, size,
                                             annotations={MOUNT_ID: cache_id}))
        files[digest] = path
    config_bytes = canonical_json({"format": FORMAT, "records": dict(records), "mounts": mount_doc})
    manifest = Manifest(_OCI_MANIFEST, Descriptor.of_bytes(CONFIG_MEDIA_TYPE, config_bytes),
                        tuple(layers.values()), extra={"artifactType": ARTIFACT_TYPE})
    return CacheArtifact(manifest, encode(manifest.to_json()), config_bytes, files)


def export_cache(store: Store, solver: Any, specs: Sequence[Mapping[str, str]], *,
                 insecure: Sequence[str] = (), progress: Any) -> list[tuple[str, Digest]]:
    """Write this build's cache to every ``--cache-to``; returns (where, manifest digest)."""
    done = []
    for opts in specs:
        spec = parse_cache_spec(opts, export=True)
        stages = None if spec.mode == "max" else chain_stages(solver.graph)
        records = export_records(store, solver.steps, stages)
        mounts = sorted(getattr(solver, "cache_mount_ids", ())) if spec.mounts else []
        sid = progress.start(f"[internal] exporting cache to {spec.where} ({len(records)} records"
                             f"{f', {len(mounts)} cache mounts' if mounts else ''})")
        temps: list[Path] = []
        try:
            artifact = build_artifact(store, records, mounts, temps)
            _write(store, spec, artifact, insecure)
        except (BuildError, OSError) as exc:
            error = exc if isinstance(exc, BuildError) else CacheError(
                f"cannot export cache to {spec.where}: {exc.strerror or exc}")
            if opts.get("ignore-error", "").lower() == "true":  # buildx: a warning, not a failure
                progress.internal_done(sid)
                progress.warn(f"cache not exported to {spec.where}: {error.message}")
                continue
            progress.error(sid, str(error))
            raise error from None
        finally:
            for path in temps:
                path.unlink(missing_ok=True)
        progress.internal_done(sid)
        done.append((spec.where, artifact.manifest_digest))
    return done


def _write(store: Store, spec: CacheSpec, artifact: CacheArtifact, insecure: Sequence[str]) -> None:
    if spec.kind == "local":
        from ..oci.layout import write_layout

        # The layout names the artifact by its ref name; the repository part is a placeholder.
        write_layout(spec.location, artifact, [f"pybuild-cache:{spec.tag}"])  # type: ignore[arg-type]
        return
    from ..images import BlobSources
    from ..oci.push import push_image
    from ..oci.registry import Registry
    from ..reference import ImageRef

    ref = ImageRef.parse(spec.location)
    sources = BlobSources(store)
    seen: list[tuple[Digest, str]] = []
    try:
        push_image(artifact, [ref],  # type: ignore[arg-type]
                   registry_for=lambda host: Registry(host, insecure_registries=tuple(insecure)),
                   sources=sources.get, record=lambda d, where: seen.append((d, where)),
                   report=lambda line: None)
    finally:
        sources.add(seen)

