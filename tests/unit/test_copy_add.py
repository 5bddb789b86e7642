"""ADD of local archives: detection by content, safe extraction, owners; source classification."""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from builder.context import BuildContext
from builder.copy import SourceSpec, copy_into
from builder.copy_add import classify_source, is_archive, parse_git_ref
from builder.errors import ContextError

ROOT = os.geteuid() == 0


def tar_bytes(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return buf.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, *, mode: int = 0o644, uid: int = 0, gid: int = 0,
          linkname: str = "", mtime: int = 1_000_000) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.uid, ti.gid, ti.linkname, ti.mtime = kind, mode, uid, gid, linkname, mtime
    return ti


SAMPLE = tar_bytes([
    (entry("./", tarfile.DIRTYPE, mode=0o700), None),
    (entry("app/", tarfile.DIRTYPE, mode=0o750, uid=7, gid=8), None),
    (entry("app/run.sh", mode=0o755, uid=7, gid=8), b"#!/bin/sh\n"),
    (entry("app/link", tarfile.SYMTYPE, linkname="run.sh"), None),
    (entry("app/hard", tarfile.LNKTYPE, linkname="app/run.sh"), None),
])

COMPRESSORS = {
    "plain": lambda b: b,
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
}


def context_with(tmp_path: Path, files: dict[str, bytes]) -> BuildContext:
    root = tmp_path / "ctx"
    root.mkdir()
    for name, data in files.items():
        (root / name).write_bytes(data)
    return BuildContext.open(root, None)


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_archives_are_extracted_whatever_the_compression_and_name(tmp_path: Path, kind: str) -> None:
    ctx = context_with(tmp_path, {"blob.bin": COMPRESSORS[kind](SAMPLE)})
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    copy_into(rootfs, [SourceSpec.path(ctx, "blob.bin")], "/opt", is_add=True)
    assert (rootfs / "opt/app/run.sh").read_bytes() == b"#!/bin/sh\n"
    assert os.readlink(rootfs / "opt/app/link") == "run.sh"
    assert os.stat(rootfs / "opt/app/hard").st_ino == os.stat(rootfs / "opt/app/run.sh").st_ino
    assert stat.S_IMODE(os.stat(rootfs / "opt/app").st_mode) == 0o750
    assert os.stat(rootfs / "opt/app").st_mtime == 1_000_000
    # The archive's "./" does not change the destination directory.
    assert stat.S_IMODE(os.stat(rootfs / "opt").st_mode) == 0o755


def test_copy_never_extracts_and_add_unpack_false_neither(tmp_path: Path) -> None:
    ctx = context_with(tmp_path, {"a.tar.gz": gzip.compress(SAMPLE, mtime=0)})
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    copy_into(rootfs, [SourceSpec.path(ctx, "a.tar.gz")], "/c/")
    copy_into(rootfs, [SourceSpec.path(ctx, "a.tar.gz")], "/u/", is_add=True, unpack_archives=False)
    assert (rootfs / "c/a.tar.gz").read_bytes() == gzip.compress(SAMPLE, mtime=0)
    assert (rootfs / "u/a.tar.gz").is_file()


@pytest.mark.parametrize("data", [b"", b"\0" * 1024, b"hello world\n" * 100, gzip.compress(b"not a tar" * 100)])
def test_non_archives_are_copied(tmp_path: Path, data: bytes) -> None:
    ctx = context_with(tmp_path, {"x.tar": data})
    assert not is_archive(os.fspath(tmp_path / "ctx/x.tar"))
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    copy_into(rootfs, [SourceSpec.path(ctx, "x.tar")], "/d/", is_add=True)
    assert (rootfs / "d/x.tar").read_bytes() == data


def test_symlink_to_archive_is_not_extracted_by_is_archive(tmp_path: Path) -> None:
    (tmp_path / "a.tar").write_bytes(SAMPLE)
    os.symlink("a.tar", tmp_path / "l")
    assert is_archive(os.fspath(tmp_path / "a.tar"))
    assert not is_archive(os.fspath(tmp_path / "l"))


def test_extraction_replaces_files_and_keeps_dirs(tmp_path: Path) -> None:
    ctx = context_with(tmp_path, {"a.tar": SAMPLE})
    rootfs = tmp_path / "rootfs"
    (rootfs / "opt/app").mkdir(parents=True)
    (rootfs / "opt/app/run.sh").write_text("old")
    (rootfs / "opt/app/other").write_text("stays")
    copy_into(rootfs, [SourceSpec.path(ctx, "a.tar")], "/opt/", is_add=True)
    assert (rootfs / "opt/app/run.sh").read_bytes() == b"#!/bin/sh\n"
    assert (rootfs / "opt/app/other").read_text() == "stays"


def test_extraction_cannot_escape_through_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = tar_bytes([
        (entry("esc", tarfile.SYMTYPE, linkname=os.fspath(outside)), None),
        (entry("esc/pwned", mode=0o644), b"x"),
        (entry("/abs/file"), b"y"),
    ])
    ctx = context_with(tmp_path, {"evil.tar": evil})
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    copy_into(rootfs, [SourceSpec.path(ctx, "evil.tar")], "/dst", is_add=True)
    assert list(outside.iterdir()) == []
    # The absolute link target resolved inside the destination, as under a chroot.
    assert (rootfs / "dst" / os.fspath(outside).lstrip("/") / "pwned").read_bytes() == b"x"
    assert (rootfs / "dst/abs/file").read_bytes() == b"y"


def test_extraction_refuses_dotdot(tmp_path: Path) -> None:
    ctx = context_with(tmp_path, {"evil.tar": tar_bytes([(entry("../../x"), b"x")])})
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    with pytest.raises(ContextError, match="outside its root"):
        copy_into(rootfs, [SourceSpec.path(ctx, "evil.tar")], "/dst", is_add=True)
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(not ROOT, reason="ownership needs root")
def test_archive_owners_kept_unless_chown(tmp_path: Path) -> None:
    ctx = context_with(tmp_path, {"a.tar": SAMPLE})
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    copy_into(rootfs, [SourceSpec.path(ctx, "a.tar")], "/keep/", is_add=True)
    copy_into(rootfs, [SourceSpec.path(ctx, "a.tar")], "/mine/", is_add=True, chown=(33, 34))
    st = os.stat(rootfs / "keep/app/run.sh")
    assert (st.st_uid, st.st_gid) == (7, 8)
    for p in ("mine", "mine/app", "mine/app/run.sh"):
        st = os.lstat(rootfs / p)
        assert (st.st_uid, st.st_gid) == (33, 34), p


@pytest.mark.parametrize(
    "src,kind",
    [
        ("https://example.com/a.tar.gz", "url"),
        ("http://example.com/x", "url"),
        ("https://github.com/moby/buildkit.git", "git"),
        ("https://github.com/moby/buildkit.git#v0.10.1:docs", "git"),
        ("git@github.com:moby/buildkit.git", "git"),
        ("git://host/repo", "git"),
        ("ssh://git@host/repo", "git"),
        ("github.com/moby/buildkit", "path"),
        ("./local.tar", "path"),
        ("local:file", "path"),
    ],
)
def test_classify_source_as_buildkit(src: str, kind: str) -> None:
    assert classify_source(src) == kind


def test_parse_git_ref_forms() -> None:
    g = parse_git_ref("https://h/r.git#v1.2:sub/../docs")
    assert (g.remote, g.ref, g.subdir) == ("https://h/r.git", "v1.2", "docs")
    g = parse_git_ref("https://h/r.git?tag=v1&subdir=x&keep-git-dir=true")
    assert (g.ref, g.subdir, g.keep_git_dir) == ("refs/tags/v1", "x", True)
    with pytest.raises(ContextError, match="unexpected query"):
        parse_git_ref("https://h/r.git?bogus=1")


def test_add_missing_source_says_add(tmp_path: Path) -> None:
    ctx = context_with(tmp_path, {"a": b"a"})
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    with pytest.raises(ContextError) as err:
        copy_into(rootfs, [SourceSpec.path(ctx, "nope")], "/", is_add=True)
    assert str(err.value) == 'ADD failed: "nope" not found in build context'
