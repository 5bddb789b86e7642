"""ADD of local archives: detection by content, safe extraction, owners; source classification."""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import shutil
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
    # as tar tools write it: a hard link's header repeats its file's (moby applies it)
    (entry("app/hard", tarfile.LNKTYPE, linkname="app/run.sh", mode=0o755, uid=7, gid=8), None),
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
        (entry("/abs/file"), b"y"),
        (entry("esc", tarfile.SYMTYPE, linkname=os.fspath(outside)), None),
        (entry("esc/pwned", mode=0o644), b"x"),
    ])
    ctx = context_with(tmp_path, {"evil.tar": evil})
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    # The absolute link target resolves inside the destination, as under moby's chroot,
    # where it does not exist: the entry below it fails there.
    with pytest.raises(ContextError, match="esc/pwned: No such file or directory"):
        copy_into(rootfs, [SourceSpec.path(ctx, "evil.tar")], "/dst", is_add=True)
    assert list(outside.iterdir()) == []
    assert (rootfs / "dst/abs/file").read_bytes() == b"y"


def add_archive(tmp_path: Path, data: bytes, dest: str = "/dst/", **kw: object) -> Path:
    shutil.rmtree(tmp_path / "ctx", ignore_errors=True)
    ctx = context_with(tmp_path, {"a.tar": data})
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir(exist_ok=True)
    copy_into(rootfs, [SourceSpec.path(ctx, "a.tar")], dest, is_add=True, **kw)  # type: ignore[arg-type]
    return rootfs


def test_extraction_cleans_dotdot_against_the_destination(tmp_path: Path) -> None:
    # moby unpacks chrooted in the destination: "../x" is "/x" there, not an error
    rootfs = add_archive(tmp_path, tar_bytes([
        (entry("../../x"), b"x"), (entry("a/../../y"), b"y"), (entry("h", tarfile.LNKTYPE, linkname="../x"), None),
    ]), "/dst/sub/")
    assert sorted(os.listdir(rootfs / "dst/sub")) == ["h", "x", "y"]
    assert (rootfs / "dst/sub/y").read_bytes() == b"y"
    assert os.stat(rootfs / "dst/sub/h").st_ino == os.stat(rootfs / "dst/sub/x").st_ino
    assert sorted(os.listdir(tmp_path)) == ["ctx", "rootfs"]
    assert sorted(os.listdir(rootfs)) == ["dst"]


def test_root_entry_sets_the_destination_and_dot_slash_does_not(tmp_path: Path) -> None:
    rootfs = add_archive(tmp_path, tar_bytes([(entry("/", tarfile.DIRTYPE, mode=0o700, mtime=12345), None),
                                              (entry("a"), b"a")]), "/slash/")
    assert (rootfs / "slash/a").read_bytes() == b"a"
    add_archive(tmp_path, tar_bytes([(entry("./", tarfile.DIRTYPE, mode=0o700, mtime=12345), None)]), "/dot/")
    st = os.stat(rootfs / "slash")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o700, 12345)
    assert stat.S_IMODE(os.stat(rootfs / "dot").st_mode) == 0o755


def test_hard_link_entry_sets_its_inode_metadata(tmp_path: Path) -> None:
    rootfs = add_archive(tmp_path, tar_bytes([
        (entry("f", mode=0o600, mtime=1000), b"f"),
        (entry("h", tarfile.LNKTYPE, linkname="f", mode=0o755, mtime=2000), None),
    ]))
    st = os.stat(rootfs / "dst/f")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime, st.st_nlink) == (0o755, 2000, 2)


def test_times_before_the_epoch_become_the_epoch(tmp_path: Path) -> None:
    rootfs = add_archive(tmp_path, tar_bytes([(entry("old", mtime=-100), b"o")]))
    assert os.lstat(rootfs / "dst/old").st_mtime == 0


def test_chmod_does_not_apply_to_the_archive_destination(tmp_path: Path) -> None:
    rootfs = add_archive(tmp_path, SAMPLE, "/new/dir/", chmod=0o700)
    assert stat.S_IMODE(os.stat(rootfs / "new/dir").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(rootfs / "new/dir/app/run.sh").st_mode) == 0o755


@pytest.mark.parametrize("target", ["nowhere", "/dst/real"])
def test_entry_below_a_dangling_link_fails(tmp_path: Path, target: str) -> None:
    # the link resolves inside the destination, where neither target exists
    with pytest.raises(ContextError, match=r"extracting 'a.tar': s/f: No such file"):
        add_archive(tmp_path, tar_bytes([(entry("s", tarfile.SYMTYPE, linkname=target), None),
                                         (entry("real", tarfile.DIRTYPE), None), (entry("s/f"), b"f")]))
    assert not (tmp_path / "rootfs/dst/nowhere").exists()
    assert not (tmp_path / "rootfs/dst/dst").exists()


def test_unknown_entry_types_fail_as_in_moby(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match=r"unhandled tar header type 55 \('c'\)"):
        add_archive(tmp_path, tar_bytes([(entry("c", tarfile.CONTTYPE), b"")]))


def _unterminated(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    data = tar_bytes(entries)
    while data.endswith(bytes(512)):
        data = data[:-512]
    return data


@pytest.mark.parametrize("tail,error", [
    (b"", None),                      # no end blocks: Go's reader ends there too
    (bytes(512), None),               # one zero block, then the end
    (bytes(300), "unexpected EOF"),   # a cut header
    (bytes(700), "unexpected EOF"),   # a zero block, then a cut one
    (bytes(512) + b"J" * 512, "invalid tar header"),
    (b"J" * 512, "invalid tar header"),
], ids=["no-end-blocks", "one-zero-block", "cut-header", "zero-then-cut", "zero-then-junk", "junk"])
def test_the_archive_end_is_judged_as_go_does(tmp_path: Path, tail: bytes, error: str | None) -> None:
    data = _unterminated([(entry("a"), b"a")]) + tail
    if error is None:
        assert (add_archive(tmp_path, data) / "dst/a").read_bytes() == b"a"
    else:
        with pytest.raises(ContextError, match=f"archive 'a.tar' is damaged: {error}"):
            add_archive(tmp_path, data)


def test_a_cut_in_padding_ends_the_archive_and_a_cut_in_data_fails(tmp_path: Path) -> None:
    whole = tar_bytes([(entry("big"), b"z" * 3000), (entry("next"), b"n")])
    start = whole.index(b"z" * 3000)
    rootfs = add_archive(tmp_path, whole[:start + 3000])
    assert os.listdir(rootfs / "dst") == ["big"]
    with pytest.raises(ContextError, match="archive 'a.tar' is damaged: unexpected end of data"):
        add_archive(tmp_path / "rootfs", whole[:start + 1000])


def test_zstd_opening_with_a_skippable_frame_is_an_archive(tmp_path: Path) -> None:
    skippable = b"\x5a\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"meta"
    ctx = context_with(tmp_path, {"a.tzst": skippable + zstandard.ZstdCompressor().compress(SAMPLE)})
    assert is_archive(os.fspath(tmp_path / "ctx/a.tzst"))
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    copy_into(rootfs, [SourceSpec.path(ctx, "a.tzst")], "/opt", is_add=True)
    assert (rootfs / "opt/app/run.sh").read_bytes() == b"#!/bin/sh\n"


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
