"""From a solved stage to an image, and from an image to the outputs buildx knows.

``make_image`` turns the final stage's layers and ImageState into an image config and
a manifest in the store; ``write_outputs`` writes what ``-o`` asked for: an OCI archive,
a docker archive, the root filesystem as a folder or a tar. Every file output is
written aside and renamed, so it appears whole or not at all.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .cache.store import LayerBlob, Store, remove_tree
from .config import HistoryEntry
from .digest import Digest
from .errors import BuildError, UsageError
from .fsutil import make_temp_dir
from .graph import platform_args
from .solve import LayerRef, StageResult, format_time

__all__ = ["check_outputs", "config_document", "ensure_layer_blob", "make_image", "platform_folder",
           "to_dest", "write_index_outputs", "write_outputs"]


def ensure_layer_blob(store: Store, layer: LayerRef, *, compression: str, level: int | None,
                      source_date_epoch: int | None, keep: bool = False) -> LayerBlob:
    """The blob of a layer in the wanted compression, made from its snapshot when the store
    has none (a cached step may have been made with another compression). ``keep``: any
    blob the layer already has will do (base image layers are exported as they came, as
    BuildKit does without force-compression)."""
    from .layers.compress import media_type_for

    plain = media_type_for("uncompressed")
    if keep and layer.blob is not None and store.has_blob(layer.blob.digest) and \
            layer.blob.media_type != plain:
        return layer.blob
    known = store.layer_blobs(layer.diff_id)
    if layer.blob is not None:
        known.setdefault(layer.blob.media_type, layer.blob)
    want = media_type_for(compression)  # type: ignore[arg-type]
    # (a step's plain tar is kept as its snapshot only: Store.layer_file makes it)
    usable = {media: blob for media, blob in known.items() if store.has_layer(blob.digest)}
    if want in usable:
        return usable[want]
    compressed = [blob for media, blob in usable.items() if media != plain]
    if keep and compressed:
        return compressed[0]
    # (an uncompressed base layer, e.g. from `pybuild import`, is compressed as asked)
    source = usable.get(plain) or next(iter(usable.values()), None)
    if source is not None and store.has_blob(source.digest):
        # the plain tar when there is one: nothing to decompress
        blob = _recompress(store, source, compression, level)
    else:
        from .layers.tar import write_layer

        snap = store.snapshot_path(layer.diff_id)
        if not snap.is_dir():
            raise BuildError(f"layer {layer.diff_id} has neither a blob nor a snapshot in the store",
                             hint="run `pybuild cache verify --repair` and build again")
        # Straight from the snapshot, in one pass. A plain tar kept as its snapshot was made
        # without an epoch, and need not be hashed again while its files are as they were;
        # a layer whose blobs are all gone is made with the export's epoch, and checked.
        epoch = None if source is not None else source_date_epoch
        known_diff = layer.diff_id if source is not None and compression != "uncompressed" \
            and store.snapshot_untouched(layer.diff_id) else None
        tmp = store.tempfile("layer-")
        rec = write_layer(snap, tmp, compression=compression, level=level,  # type: ignore[arg-type]
                          source_date_epoch=epoch, diff_id=known_diff)
        if rec.diff_id != layer.diff_id:
            from .cache.store import snapshot_changed

            tmp.unlink(missing_ok=True)
            raise snapshot_changed(layer.diff_id, rec.diff_id)
        store.put_blob_file(tmp, rec.digest, verified=True)
        blob = LayerBlob(rec.diff_id, rec.digest, rec.size, rec.media_type)
    store.add_layer_blob(blob)
    return blob


def _recompress(store: Store, source: LayerBlob, compression: str, level: int | None) -> LayerBlob:
    """The same layer tar in another compression, streamed from the blob the store has: the
    diff_id cannot change (it is checked on the way, unless the source is the plain tar,
    whose digest is its diff_id), the tar is never rewritten; the result is hashed as it
    is written."""
    import hashlib

    from .digest import CHUNK
    from .layers.compress import CompressingWriter, media_type_for, open_decompressed
    from .layers.tar import HashingWriter

    plain_source = source.media_type == media_type_for("uncompressed") and source.digest == source.diff_id
    tmp = store.tempfile("layer-")
    raw = None if plain_source else hashlib.sha256()
    with open(store.blob_path(source.digest), "rb") as src, open_decompressed(src) as plain, \
            open(tmp, "wb") as out:
        blob = HashingWriter(out)  # type: ignore[arg-type]
        with CompressingWriter(blob, compression, level) as writer:  # type: ignore[arg-type]
            while chunk := plain.read(CHUNK):
                if raw is not None:
                    raw.update(chunk)
                writer.write(chunk)
        media = writer.media_type
        out.flush()
        os.fsync(out.fileno())
    if raw is not None and f"sha256:{raw.hexdigest()}" != str(source.diff_id):
        tmp.unlink()
        raise BuildError(f"layer blob {source.digest} does not hold its diff_id {source.diff_id}",
                         hint="run `pybuild cache verify --repair` and build again")
    store.put_blob_file(tmp, blob.digest, verified=True)
    return LayerBlob(source.diff_id, blob.digest, blob.size, media)


def _base_layer_count(result: StageResult) -> int:
    """How many of the final layers are the base image's own (exported as they are). A
    folder context has no manifest: its layer was made here and takes the asked compression."""
    if result.base is None or result.base.manifest_digest is None:
        return 0
    base_ids = [b.diff_id for b in result.base.layers]
    ours = [layer.diff_id for layer in result.fs.layers[:len(base_ids)]]
    return len(base_ids) if ours == base_ids else 0


def _fill_history_times(history: Sequence[HistoryEntry], base_count: int,
                        fallback: str | None) -> list[HistoryEntry]:
    """Entries this build added without a time get the time of the layer step before
    them (or, before the first new layer, of that first layer), as BuildKit does, so
    that a fully cached rebuild gives the same config."""
    out = list(history)
    new = range(base_count, len(out))
    first_layer_time = next((out[i].created for i in new if out[i].created), None)
    current = first_layer_time or fallback
    for i in new:
        if out[i].created:
            current = out[i].created
        else:
            out[i] = replace(out[i], created=current)
    return out


def config_document(result: StageResult, *, source_date_epoch: int | None,
                    platform: str | None = None) -> dict[str, Any]:
    """The image config of a stage's result. Its platform is its base image's, or, on scratch,
    the one the stage was built for; ``platform`` (an explicit --platform) then sets os and
    architecture, as BuildKit does for an explicit target."""
    image = result.image
    base_cfg: Mapping[str, Any] = result.base.config if result.base else {}
    base_history = len(result.base.config.get("history") or []) if result.base else 0
    epoch = format_time(source_date_epoch) if source_date_epoch is not None else None
    fallback = epoch or base_cfg.get("created") or format_time(0)
    history = _fill_history_times(image.history, base_history, fallback)
    if epoch is not None:
        history = [h if i < base_history else replace(h, created=epoch) for i, h in enumerate(history)]
    plat = platform_args(result.platform)
    doc: dict[str, Any] = {
        "architecture": base_cfg.get("architecture") or plat["TARGETARCH"],
        "os": base_cfg.get("os") or plat["TARGETOS"],
    }
    variant = base_cfg.get("variant") or plat["TARGETVARIANT"]
    if platform:
        want = platform_args(platform)
        same = (want["TARGETOS"], want["TARGETARCH"]) == (doc["os"], doc["architecture"])
        doc["os"], doc["architecture"] = want["TARGETOS"], want["TARGETARCH"]
        if want["TARGETVARIANT"] or not same:
            variant = want["TARGETVARIANT"]
    if variant:
        doc["variant"] = variant
    if image.author:
        doc["author"] = image.author
    created = next((h.created for h in reversed(history) if h.created), None)
    doc["created"] = epoch or created or fallback
    doc["config"] = image.config_json()
    doc["rootfs"] = {"type": "layers", "diff_ids": [str(layer.diff_id) for layer in result.fs.layers]}
    doc["history"] = [h.to_json() for h in history]
    return doc


def make_image(store: Store, result: StageResult, *, compression: str = "gzip",
               level: int | None = None, source_date_epoch: int | None = None,
               media: str = "oci", annotations: Mapping[str, str] | None = None,
               platform: str | None = None) -> Any:
    """Config, manifest and layer blobs of the final stage, all in the store;
    ``annotations`` in the manifest (`--annotation`; an OCI manifest only)."""
    doc = config_document(result, source_date_epoch=source_date_epoch, platform=platform)
    base_count = _base_layer_count(result)
    memo = _memo_name(doc, result, base_count, compression=compression, level=level,
                      source_date_epoch=source_date_epoch, media=media, annotations=annotations)
    image = _remembered_image(store, memo)
    if image is not None:
        return image

    from .oci.image import build_image
    from .oci.types import Descriptor, ImageConfig

    layers: list[tuple[Any, Path]] = []
    for i, layer in enumerate(result.fs.layers):
        blob = ensure_layer_blob(store, layer, compression=compression, level=level,
                                 source_date_epoch=source_date_epoch, keep=i < base_count)
        layers.append((Descriptor(blob.media_type, blob.digest, blob.size), None))
    config = ImageConfig.from_json(doc)
    image = build_image(config, layers, blob_dir=store.root / "blobs", media=media,  # type: ignore[arg-type]
                        annotations=annotations, blob_source=store.layer_file)
    # Not "manifest": refs/ documents holding one keep their blobs from `cache prune`.
    store.put_ref(memo, {"image": str(image.manifest_digest)}, durable=False)  # made again if lost
    return image


def _memo_name(doc: Mapping[str, Any], result: StageResult, base_count: int, *, compression: str,
               level: int | None, source_date_epoch: int | None, media: str,
               annotations: Mapping[str, str] | None = None) -> str:
    """The name under which the image made of exactly these inputs is remembered: the
    config, and for each layer what ``ensure_layer_blob`` decides from."""
    from .digest import canonical_json, sha256_bytes

    layers = [[str(layer.diff_id), str(layer.blob.digest) if layer.blob else None,
               layer.blob.media_type if layer.blob else None, i < base_count]
              for i, layer in enumerate(result.fs.layers)]
    inputs = {"v": 2, "config": doc, "layers": layers, "compression": compression, "level": level,
              "epoch": source_date_epoch, "media": media}
    if annotations:  # only then: the images made before keep their names
        inputs["annotations"] = dict(annotations)
    return f"made-image-{sha256_bytes(canonical_json(inputs)).hex}"


def _remembered_image(store: Store, memo: str) -> Any:
    """A fully cached rebuild makes the same image again: the one remembered under ``memo``,
    when its manifest, config and layer blobs are all still in the store (else None)."""
    doc = store.get_ref(memo)
    if not doc or not isinstance(doc.get("image"), str):
        return None
    try:
        manifest = store.read_blob(Digest.parse(doc["image"]))
        from .oci.image import image_from_manifest

        image = image_from_manifest(manifest, store.layer_file)
    except (BuildError, ValueError, OSError):
        return None  # pruned or damaged: make it again
    if all(store.has_layer(layer.digest) for layer in image.layers):
        return image
    return None


def write_outputs(store: Store, image: Any, result: StageResult, outputs: Sequence[Mapping[str, str]],
                  *, tags: Sequence[str], source_date_epoch: int | None,
                  lowers_of: Any, descriptor_annotations: Mapping[str, str] | None = None,
                  provenance: Any = None) -> list[str]:
    """Write every ``-o``; returns a line for each saying what was written.
    ``descriptor_annotations`` go on the manifest's entry in an OCI archive's index.json;
    ``provenance(folder)`` writes the provenance file into a local or tar output."""
    written = []
    for out in outputs:
        try:
            written.extend(_write_output(store, image, result, out, tags=tags,
                                         source_date_epoch=source_date_epoch,
                                         descriptor_annotations=descriptor_annotations,
                                         provenance=provenance))
        except OSError as exc:
            raise BuildError(f"cannot write the {out.get('type')} output to {out.get('dest')}: "
                             f"{exc.strerror or exc}") from None
    return written


def platform_folder(platform: str) -> str:
    """Where one platform's files go in a split output: ``linux_arm64``, as BuildKit names it."""
    return platform.replace("/", "_")


def write_index_outputs(store: Store, index: Any, parts: Sequence[tuple[str, Any, StageResult]],
                        outputs: Sequence[Mapping[str, str]], *, tags: Sequence[str],
                        source_date_epoch: int | None,
                        descriptor_annotations: Mapping[str, str] | None = None,
                        provenance: Mapping[str, Any] | None = None) -> list[str]:
    """The ``-o`` outputs of a build for several platforms: ``index`` (an IndexSpec) of the
    ``parts`` (platform, image, result). An OCI archive holds the index (and every manifest
    it lists: attestation manifests too); a local folder or a tar holds each platform's
    files in its own folder (``linux_amd64/``), as BuildKit splits them, with its
    provenance file when ``provenance`` has a writer for that platform. Pushes are the
    caller's."""
    provenance = provenance or {}
    written = []
    for out in outputs:
        kind, dest = out.get("type", ""), out.get("dest", "")
        names = [n for n in (out.get("name", "").split(",") if out.get("name") else []) if n] or list(tags)
        try:
            if kind == "oci":
                from .oci.archive import write_oci_index_archive

                to_dest(dest, lambda p, names=names: write_oci_index_archive(
                    p, index, index.images, names,
                    source_date_epoch=source_date_epoch, annotations=descriptor_annotations))
            elif kind == "local":
                for platform, _, result in parts:
                    _write_local(store, result, Path(dest) / platform_folder(platform),
                                 provenance.get(platform))
            elif kind == "tar":
                split = [(platform_folder(p), result, provenance.get(p)) for p, _, result in parts]
                to_dest(dest, lambda p, split=split: _write_rootfs_tar(store, parts[0][2], Path(p), split))
            else:
                continue  # "image" with push, "registry": pushed by the caller
        except OSError as exc:
            raise BuildError(f"cannot write the {kind} output to {dest}: {exc.strerror or exc}") from None
        written.append(f"{kind} -> {dest}")
    return written


def check_outputs(outputs: Sequence[Mapping[str, str]]) -> None:
    """Refuse, before anything is built, an output whose destination cannot be written."""
    for out in outputs:
        kind, dest = out.get("type", ""), out.get("dest", "")
        if kind not in ("oci", "docker", "local", "tar") or not dest or dest == "-":
            continue
        path = Path(dest).absolute()
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise UsageError(f"output destination {dest}: {parent} is not a folder")
        if kind != "local" and path.is_dir():
            raise UsageError(f"output destination {dest} is a folder; give a file name")
        if kind == "local" and path.exists() and not path.is_dir():
            raise UsageError(f"output destination {dest} exists and is not a folder")


def _write_output(store: Store, image: Any, result: StageResult, out: Mapping[str, str], *,
                  tags: Sequence[str], source_date_epoch: int | None,
                  descriptor_annotations: Mapping[str, str] | None = None,
                  provenance: Any = None) -> list[str]:
    kind = out.get("type", "")
    dest = out.get("dest", "")
    names = [n for n in (out.get("name", "").split(",") if out.get("name") else []) if n] or list(tags)
    if kind == "oci":
        from .oci.archive import write_oci_archive

        to_dest(dest, lambda p: write_oci_archive(p, image, names, source_date_epoch=source_date_epoch,
                                                   annotations=descriptor_annotations))
    elif kind == "docker":
        from .oci.archive import write_docker_archive

        to_dest(dest, lambda p: write_docker_archive(p, image, names, source_date_epoch=source_date_epoch))
    elif kind == "local":
        _write_local(store, result, Path(dest), provenance)
    elif kind == "tar":
        to_dest(dest, lambda p: _write_rootfs_tar(store, result, Path(p), extra=provenance))
    elif kind in ("image", "registry"):
        return []  # handled by the caller (local image store, push)
    else:
        raise UsageError(f"unknown output type {kind!r}")
    return [f"{kind} -> {dest}"]


def to_dest(dest: str, write: Any) -> None:
    """Write an output file aside and rename it into place; `-` streams it to stdout."""
    if dest == "-":
        import shutil
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "out"
            write(path)
            with open(path, "rb") as f:
                shutil.copyfileobj(f, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        return
    target = Path(dest)
    if target.is_dir():
        raise UsageError(f"output destination {dest} is a folder; give a file name")
    if not target.parent.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
    write(target)


def _flatten(store: Store, result: StageResult, into: Path) -> None:
    from .layers.unpack import unpack_blob

    for layer in result.fs.layers:
        # any blob the layer has will do for unpacking: never compress just for that
        blob = ensure_layer_blob(store, layer, compression="uncompressed", level=None,
                                 source_date_epoch=None, keep=True)
        unpack_blob(store.layer_file(blob.digest), into, mode="apply")


def _write_local(store: Store, result: StageResult, dest: Path, extra: Any = None) -> None:
    """The root filesystem as a folder; ``extra(folder)`` adds to it before it is renamed
    into place (the provenance file)."""
    dest = dest.resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)  # as buildx makes a local output's folders
    tmp = Path(make_temp_dir(dest.parent, ".pybuild-"))
    try:
        _flatten(store, result, tmp)
        if extra is not None:
            extra(tmp)
        if dest.exists():
            if dest.is_dir() and not any(dest.iterdir()):
                dest.rmdir()
            elif dest.is_dir():
                # Existing content is replaced as a whole, never merged half.
                old = dest.with_name(dest.name + ".old-pybuild")
                os.rename(dest, old)
                os.rename(tmp, dest)
                remove_tree(old)
                return
            else:
                raise UsageError(f"output destination {dest} exists and is not a folder")
        os.rename(tmp, dest)
    except BaseException:
        with contextlib.suppress(Exception):
            remove_tree(tmp)
        raise


def _write_rootfs_tar(store: Store, result: StageResult, dest: Path,
                      split: Sequence[tuple[str, StageResult, Any]] = (), *, extra: Any = None) -> None:
    """The root filesystem as a tar; ``split``: several (folder, result, extra), each in its
    own top folder; ``extra(folder)`` adds to a tree before it is archived."""
    from .layers.tar import write_tree_tar

    tmp = Path(make_temp_dir(store.root / "tmp", ".pybuild-"))
    try:
        if split:
            for folder, one, add in split:
                (tmp / folder).mkdir()
                _flatten(store, one, tmp / folder)
                if add is not None:
                    add(tmp / folder)
        else:
            _flatten(store, result, tmp)
            if extra is not None:
                extra(tmp)
        part = dest.with_name(f".{dest.name}.part")
        with open(part, "wb") as f:
            write_tree_tar(tmp, f)
        os.replace(part, dest)
    finally:
        remove_tree(tmp)


_ = Digest
