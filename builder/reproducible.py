"""`pybuild build --check-reproducible`: build twice, compare, name the first difference.

Both builds run with ``--no-cache`` in fresh temporary stores (so nothing one made can be
reused by the other, base images included) and with the same SOURCE_DATE_EPOCH: the one
given, or else the time now in whole seconds, said on stderr, since without an epoch
image times are build times and no two builds could agree. The user's store, tags and
outputs are not touched.

When the manifest digests differ the images are compared in the order a reader would
look: the config (less ``rootfs``), then each layer (its diff_id: the tars entry by entry
-- name, type, mode, owner, size, mtime, link target, xattrs, content hash --, else its
compressed bytes), then the manifest itself. The first difference is the report.
"""
from __future__ import annotations

import hashlib
import json
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from .digest import Digest
from .errors import BuildError, UsageError

__all__ = ["ReproducibleReport", "check_reproducible", "compare_images", "compare_layer_tars"]


@dataclass(frozen=True)
class ReproducibleReport:
    """The outcome of --check-reproducible: the two digests and the first difference."""

    epoch: int
    digests: tuple[Digest, Digest]  # the two manifest digests
    difference: str | None  # None: byte for byte the same image

    @property
    def reproducible(self) -> bool:
        return self.difference is None


def check_reproducible(req: Any) -> ReproducibleReport:
    """Build ``req`` (a BuildRequest) twice as described above; the comparison's report.
    Raises UsageError for the flags that would write or push an image."""
    from .build import run_build
    from .cache.store import remove_tree

    if req.outputs or req.tags or req.iidfile or req.explain or req.dry_run:
        raise UsageError("--check-reproducible builds in temporary stores and keeps nothing",
                         hint="drop -t, -o, --push, --iidfile and --explain, or build once more "
                              "without --check-reproducible")
    if req.context == "-" or req.dockerfile == "-":
        raise UsageError("--check-reproducible reads its inputs twice: stdin cannot be one of them",
                         hint="give the context as a folder and the Dockerfile as a file")
    epoch = req.source_date_epoch
    if epoch is None:
        epoch = int(time.time())
        sys.stderr.write(f"check-reproducible: SOURCE_DATE_EPOCH is not set: both builds use "
                         f"{epoch} (now); set it to your sources' date to check that date\n")
    top = Path(tempfile.mkdtemp(prefix="pybuild-reproducible-"))
    try:
        roots = (top / "store-1", top / "store-2")
        digests = []
        for n, root in enumerate(roots, 1):
            sys.stderr.write(f"check-reproducible: build {n} of 2 (store {root})\n")
            result = run_build(replace(req, root=str(root), no_cache=True, no_cache_filter=(),
                                       source_date_epoch=epoch, metadata_file=None))
            digests.append(result.manifest_digest)
        difference = None
        if digests[0] != digests[1]:
            difference = compare_images(roots[0], digests[0], roots[1], digests[1]) or \
                "the manifests differ, though no field of theirs was found to"
        return ReproducibleReport(epoch, (digests[0], digests[1]), difference)
    finally:
        remove_tree(top)


def _blob(root: Path, digest: Digest | str) -> Path:
    d = digest if isinstance(digest, Digest) else Digest.parse(digest)
    return root / "blobs" / d.algorithm / d.hex


def _json(root: Path, digest: Digest | str) -> Any:
    return json.loads(_blob(root, digest).read_bytes())


def compare_images(root_a: Path, manifest_a: Digest, root_b: Path, manifest_b: Digest) -> str | None:
    """The first difference between two images, each in a store's blobs (None: equal)."""
    man = (_json(root_a, manifest_a), _json(root_b, manifest_b))
    cfg = (_json(root_a, man[0]["config"]["digest"]), _json(root_b, man[1]["config"]["digest"]))
    found = first_json_difference({k: v for k, v in cfg[0].items() if k != "rootfs"},
                                  {k: v for k, v in cfg[1].items() if k != "rootfs"})
    if found:
        return f"image config: {found}"
    diff_ids = [list(c.get("rootfs", {}).get("diff_ids", [])) for c in cfg]
    if len(diff_ids[0]) != len(diff_ids[1]):
        return f"image config: {len(diff_ids[0])} layers in build 1, {len(diff_ids[1])} in build 2"
    steps = _layer_steps(cfg[0])
    for n, (one, two) in enumerate(zip(man[0]["layers"], man[1]["layers"])):
        label = f"layer {n}" + (f" ({steps[n]})" if n < len(steps) and steps[n] else "")
        if diff_ids[0][n] != diff_ids[1][n]:
            with open(_blob(root_a, one["digest"]), "rb") as fa, open(_blob(root_b, two["digest"]), "rb") as fb:
                entry = compare_layer_tars(fa, fb)
            return f"{label}: " + (entry or f"diff_id {diff_ids[0][n]} vs {diff_ids[1][n]}")
        if one != two:
            return (f"{label}: same files, other compressed bytes ({one.get('mediaType')} "
                    f"{one['digest']} vs {two.get('mediaType')} {two['digest']})")
    found = first_json_difference(man[0], man[1])
    return f"manifest: {found}" if found else None


def _layer_steps(config: Mapping[str, Any]) -> list[str]:
    """``created_by`` of the history entry of each layer (entries without a layer skipped)."""
    return [str(h.get("created_by", "")) for h in config.get("history") or []
            if not h.get("empty_layer")]


def first_json_difference(a: Any, b: Any, path: str = "") -> str | None:
    """``path: value1 vs value2`` for the first place two JSON values differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            where = f"{path}.{key}" if path else key
            if key not in a or key not in b:
                side = "build 2" if key not in a else "build 1"
                return f"{where} is only in {side}"
            found = first_json_difference(a[key], b[key], where)
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_json_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        if len(a) != len(b):
            return f"{path}: {len(a)} items in build 1, {len(b)} in build 2"
        return None
    if a != b:
        return f"{path or '(whole)'}: {json.dumps(a)} vs {json.dumps(b)}"
    return None


@dataclass(frozen=True)
class _Entry:
    """One tar entry as the reproducibility report compares it."""

    name: str
    fields: tuple[tuple[str, Any], ...]  # (what, value) in the order they are reported


_TYPES = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "folder",
          tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hard link", tarfile.CHRTYPE: "char device",
          tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "fifo"}


def _entries(blob: BinaryIO) -> Iterator[_Entry]:
    from .layers.compress import open_decompressed

    with open_decompressed(blob) as plain, tarfile.open(fileobj=plain, mode="r|") as tar:
        for info in tar:
            content = None
            if info.isreg():
                h = hashlib.sha256()
                f = tar.extractfile(info)
                assert f is not None
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                content = f"sha256:{h.hexdigest()}"
            xattrs = sorted((k, v) for k, v in info.pax_headers.items() if k.startswith("SCHILY."))
            yield _Entry(info.name, (
                ("type", _TYPES.get(info.type, repr(info.type))), ("mode", oct(info.mode)),
                ("uid/gid", f"{info.uid}:{info.gid}"), ("size", info.size),
                ("mtime", info.mtime), ("link target", info.linkname),
                ("device", f"{info.devmajor}:{info.devminor}"), ("xattrs", xattrs),
                ("content", content)))


def compare_layer_tars(a: BinaryIO, b: BinaryIO) -> str | None:
    """The first entry where two layer blobs (any compression) differ, or None."""
    ia, ib = _entries(a), _entries(b)
    n = 0
    while True:
        ea, eb = next(ia, None), next(ib, None)
        if ea is None and eb is None:
            return None
        if ea is None or eb is None:
            extra, side = (eb, "build 2") if ea is None else (ea, "build 1")
            assert extra is not None
            return f"entry {n}: {extra.name} is only in {side} (the other tar ends before it)"
        if ea.name != eb.name:
            return f"entry {n}: {ea.name} in build 1, {eb.name} in build 2"
        for (what, va), (_, vb) in zip(ea.fields, eb.fields):
            if va != vb:
                return f"{ea.name}: {what} {va} vs {vb}"
        n += 1


def report_lines(report: ReproducibleReport) -> list[str]:
    """What the command prints on stdout when the builds agree."""
    return [f"build 1: {report.digests[0]}", f"build 2: {report.digests[1]}",
            f"reproducible (SOURCE_DATE_EPOCH={report.epoch})"]


def not_reproducible(report: ReproducibleReport) -> BuildError:
    """The error (exit 1) the command raises when they do not."""
    return BuildError(f"not reproducible: build 1 gave {report.digests[0]}, build 2 "
                      f"{report.digests[1]} (SOURCE_DATE_EPOCH={report.epoch}); first difference: "
                      f"{report.difference}")
