"""Layers against a real overlayfs: the upper dir of a mounted overlay, written as a layer,
unpacked as a snapshot and mounted again (or applied onto a copy of the lower) must give
back exactly the merged view, and GNU tar must accept the layer."""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from builder.layers.diff import is_overlay_xattr
from builder.layers.tar import write_layer
from builder.layers.unpack import unpack_blob

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting overlayfs needs root")

Listing = dict[str, tuple[object, ...]]


def _mount_overlay(merged: Path, lowers: list[Path], upper: Path | None = None,
                   work: Path | None = None) -> None:
    opts = "lowerdir=" + ":".join(os.fspath(p) for p in lowers)
    if upper is not None and work is not None:
        opts += f",upperdir={upper},workdir={work}"
    # What the executor must use too: renames and metadata-only copy-ups cannot be layers.
    opts += ",redirect_dir=off,metacopy=off,index=off"
    merged.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, os.fspath(merged)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount overlayfs here: {res.stderr.strip()}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", os.fspath(path)], check=True)


def _listing(root: Path) -> Listing:
    """Everything a user of the tree can see, per path."""
    out: Listing = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath, name)
            rel = p.relative_to(root).as_posix()
            st = p.lstat()
            content: object = None
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                content = (os.major(st.st_rdev), os.minor(st.st_rdev))
            xattrs = tuple(sorted(
                (k, os.getxattr(p, k, follow_symlinks=False))
                for k in os.listxattr(p, follow_symlinks=False) if not is_overlay_xattr(k)
            ))
            mtime = None if stat.S_ISLNK(st.st_mode) else int(st.st_mtime)
            out[rel] = (stat.filemode(st.st_mode), st.st_uid, st.st_gid, st.st_size
                        if not stat.S_ISDIR(st.st_mode) else None, content, xattrs, mtime)
            if not stat.S_ISDIR(st.st_mode):
                inodes.setdefault(st.st_ino, []).append(rel)
    for group in inodes.values():
        for rel in group:
            out[rel] = out[rel] + (tuple(sorted(group)) if len(group) > 1 else (),)
    return out


def _make_lower(lower: Path) -> None:
    (lower / "etc").mkdir(parents=True)
    (lower / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (lower / "etc" / "gone").write_text("delete me")
    (lower / "etc" / "moved").write_text("rename me")
    (lower / "cache" / "sub").mkdir(parents=True)
    (lower / "cache" / "sub" / "old").write_text("old")
    (lower / "cache" / "old2").write_text("old2")
    (lower / "f2d").write_text("file that becomes a dir")
    (lower / "d2f" / "x").mkdir(parents=True)
    (lower / "d2f" / "x" / "y").write_text("dir that becomes a file")
    (lower / "bin").mkdir()
    (lower / "bin" / "ping").write_bytes(b"\x7fELF ping")
    (lower / "bin" / "a").write_text("hardlinked in lower")
    os.link(lower / "bin" / "a", lower / "bin" / "b")
    os.symlink("bin", lower / "sbin")


def _change_merged(m: Path) -> None:
    (m / "etc" / "gone").unlink()
    os.rename(m / "etc" / "moved", m / "etc" / "renamed")
    with open(m / "etc" / "passwd", "a") as f:
        f.write("app:x:1000:1000::/home/app:/bin/sh\n")
    shutil.rmtree(m / "cache")  # rm -rf dir; mkdir dir: an opaque directory
    (m / "cache").mkdir()
    (m / "cache" / "fresh").write_text("fresh")
    (m / "f2d").unlink()
    (m / "f2d" / "in").mkdir(parents=True)
    shutil.rmtree(m / "d2f")
    (m / "d2f").write_text("now a file")
    os.link(m / "bin" / "ping", m / "bin" / "ping-link")
    os.chmod(m / "bin" / "ping", 0o4755)
    if shutil.which("setcap"):
        subprocess.run(["setcap", "cap_net_raw+ep", os.fspath(m / "bin" / "ping")], check=True)
    else:  # a v2 file capability: cap_net_raw, effective
        os.setxattr(m / "bin" / "ping", "security.capability",
                    bytes.fromhex("01000002" "00200000" "00000000" "00000000" "00000000"))
    os.setxattr(m / "etc" / "passwd", "user.note", b"\x00binary\xff")
    os.mkfifo(m / "fifo", 0o620)
    os.mknod(m / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(m / "loop9", stat.S_IFBLK | 0o660, os.makedev(7, 9))
    (m / "home" / "app").mkdir(parents=True)
    (m / "home" / "app" / ".profile").write_text("export A=1\n")
    os.chown(m / "home" / "app", 1000, 1000)
    os.chown(m / "home" / "app" / ".profile", 1000, 1000)
    os.symlink("/etc/passwd", m / "home" / "app" / "pw")
    (m / "bin" / "b").unlink()  # one name of the lower hard-link pair goes away
    (m / ("long" * 40)).write_text("long name")


@pytest.fixture
def overlay_case(tmp_path: Path) -> Iterator[tuple[Path, Path, Listing]]:
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    upper.mkdir()
    work.mkdir()
    _make_lower(lower)
    _mount_overlay(merged, [lower], upper, work)
    try:
        _change_merged(merged)
        expected = _listing(merged)
    finally:
        _umount(merged)
    yield lower, upper, expected


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_layer_of_an_upper_dir_reproduces_the_merged_view(
    tmp_path: Path, overlay_case: tuple[Path, Path, Listing], compression: str
) -> None:
    lower, upper, expected = overlay_case
    layer = tmp_path / "layer.blob"
    rec = write_layer(upper, layer, compression=compression)  # type: ignore[arg-type]
    assert rec.size == layer.stat().st_size

    # GNU tar, independent of us, accepts the layer and sees the whiteouts.
    flag = "-z" if compression == "gzip" else "--zstd"
    names = subprocess.run(["tar", flag, "-tvf", os.fspath(layer)], check=True,
                           capture_output=True, text=True).stdout
    assert "etc/.wh.gone" in names and "cache/.wh..wh..opq" in names

    # Snapshot mode: the unpacked layer, mounted over the same lower, shows the same tree.
    snap = tmp_path / "snap"
    res = unpack_blob(layer, snap, mode="snapshot")
    assert res.diff_id == rec.diff_id and res.warnings == ()
    merged2 = tmp_path / "merged2"
    _mount_overlay(merged2, [snap, lower])
    try:
        assert _listing(merged2) == expected
    finally:
        _umount(merged2)
    # ... and writing that snapshot again gives the very same layer.
    assert write_layer(snap, tmp_path / "again", compression=compression) == rec  # type: ignore[arg-type]

    # Apply mode: onto a copy of the lower, a flat tree equal to the merged view.
    flat = tmp_path / "flat"
    subprocess.run(["cp", "-a", os.fspath(lower), os.fspath(flat)], check=True)
    res = unpack_blob(layer, flat, mode="apply")
    assert res.diff_id == rec.diff_id
    assert _listing(flat) == expected


def test_snapshot_as_lower_of_a_new_step(tmp_path: Path,
                                         overlay_case: tuple[Path, Path, Listing]) -> None:
    """A step on top of an unpacked snapshot: its own upper dir again makes a valid layer
    whose application gives the new merged view."""
    lower, upper, _ = overlay_case
    write_layer(upper, tmp_path / "l1.tgz")
    snap = tmp_path / "snap"
    unpack_blob(tmp_path / "l1.tgz", snap)
    up2, work2, m2 = tmp_path / "up2", tmp_path / "work2", tmp_path / "m2"
    up2.mkdir()
    work2.mkdir()
    _mount_overlay(m2, [snap, lower], up2, work2)
    try:
        shutil.rmtree(m2 / "cache")
        (m2 / "etc" / "renamed").unlink()
        (m2 / "new").write_text("step 2")
        expected = _listing(m2)
    finally:
        _umount(m2)
    write_layer(up2, tmp_path / "l2.tgz")
    flat = tmp_path / "flat"
    subprocess.run(["cp", "-a", os.fspath(lower), os.fspath(flat)], check=True)
    unpack_blob(tmp_path / "l1.tgz", flat, mode="apply")
    unpack_blob(tmp_path / "l2.tgz", flat, mode="apply")
    assert _listing(flat) == expected


def test_gnu_tar_extracts_our_layer_with_owners_modes_and_xattrs(
    tmp_path: Path, overlay_case: tuple[Path, Path, Listing]
) -> None:
    _, upper, expected = overlay_case
    write_layer(upper, tmp_path / "l.tgz")
    out = tmp_path / "gnu"
    out.mkdir()
    subprocess.run(["tar", "-xzpf", os.fspath(tmp_path / "l.tgz"), "--xattrs",
                    "--xattrs-include=*", "--numeric-owner", "-C", os.fspath(out)], check=True)
    got = _listing(out)
    for rel in ("bin/ping", "etc/passwd", "home/app/.profile", "home/app/pw", "null", "fifo",
                "long" * 40):
        assert got[rel][:6] == expected[rel][:6], rel  # type, mode, ids, size, content, xattrs
    assert got["bin/ping"][-1] == ("bin/ping", "bin/ping-link")
    assert any(name == "security.capability" for name, _ in got["bin/ping"][5])
