"""diff.changes: a snapshot directory (overlay upper-dir format) read as ordered changes."""
from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from builder.errors import LayerError
from builder.layers.diff import changes, walk_tree


def _whiteout(path: Path) -> None:
    """A whiteout as overlay makes it; the tar spelling where mknod is not allowed."""
    try:
        os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
    except PermissionError:
        (path.parent / (".wh." + path.name)).touch()


def _summary(root: Path) -> list[tuple[str, str]]:
    return [(c.path, c.kind) for c in changes(root)]


def test_order_kinds_and_whiteouts_first(tmp_path: Path) -> None:
    up = tmp_path / "up"
    (up / "b" / "z").mkdir(parents=True)
    (up / "b" / "a.txt").write_text("a")
    (up / "a-b").write_text("x")
    (up / "a").mkdir()
    (up / "a" / "x").write_text("x")
    _whiteout(up / "b" / "gone")
    _whiteout(up / "0gone")
    os.setxattr(up / "b", "user.overlay.opaque", b"y")
    assert _summary(up) == [
        ("0gone", "whiteout"),
        ("a", "entry"),
        ("a/x", "entry"),
        ("a-b", "entry"),
        ("b", "entry"),
        ("b", "opaque"),
        ("b/gone", "whiteout"),
        ("b/a.txt", "entry"),
        ("b/z", "entry"),
    ]


def test_tar_spellings_are_read_as_whiteout_and_opaque(tmp_path: Path) -> None:
    up = tmp_path / "up"
    (up / "d").mkdir(parents=True)
    (up / "d" / ".wh..wh..opq").touch()
    (up / "d" / ".wh.old").touch()
    got = _summary(up)
    assert ("d", "opaque") in got and ("d/old", "whiteout") in got
    assert ("d/.wh.old", "entry") not in got and ("d/.wh..wh..opq", "entry") not in got


def test_entry_fields_hardlinks_and_xattrs(tmp_path: Path) -> None:
    up = tmp_path / "up"
    up.mkdir()
    f = up / "f"
    f.write_bytes(b"hello")
    os.chmod(f, 0o4755)
    os.utime(f, ns=(1, 1_700_000_000_123_456_789))
    os.link(f, up / "g")
    os.link(f, up / "e")
    os.symlink("../somewhere", up / "link")
    os.mkfifo(up / "fifo")
    os.setxattr(f, "user.note", b"\x00\xff")
    os.setxattr(up, "user.overlay.origin", b"x")  # overlay's own: never part of a change
    got = {c.path: c for c in changes(up)}
    # "e" comes first in order, so it is the file and the others link to it.
    assert got["e"].hardlink_to is None and got["e"].size == 5
    assert got["f"].hardlink_to == "e" and got["g"].hardlink_to == "e"
    assert got["e"].mode == stat.S_IFREG | 0o4755
    assert got["e"].mtime_ns == 1_700_000_000_123_456_789
    assert got["e"].xattrs == (("user.note", b"\x00\xff"),)
    assert got["link"].link_target == "../somewhere" and stat.S_ISLNK(got["link"].mode)
    assert stat.S_ISFIFO(got["fifo"].mode)
    assert got["e"].source == up / "e"


def test_whiteouts_sharing_an_inode_are_not_hard_links(tmp_path: Path) -> None:
    up = tmp_path / "up"
    up.mkdir()
    try:
        os.mknod(up / "a", stat.S_IFCHR, os.makedev(0, 0))
    except PermissionError:
        pytest.skip("cannot make whiteout devices here")
    os.link(up / "a", up / "b")  # overlay >= 5.8 reuses one whiteout inode like this
    assert _summary(up) == [("a", "whiteout"), ("b", "whiteout")]


def test_overlay_xattrs_excluded_and_redirects_refused(tmp_path: Path) -> None:
    up = tmp_path / "up"
    (up / "d").mkdir(parents=True)
    os.setxattr(up / "d", "user.overlay.impure", b"y")
    (c,) = [c for c in changes(up) if c.path == "d"]
    assert c.xattrs == ()
    os.setxattr(up / "d", "user.overlay.redirect", b"/elsewhere")
    with pytest.raises(LayerError, match="redirect_dir"):
        list(changes(up))


def test_sockets_are_skipped(tmp_path: Path) -> None:
    up = tmp_path / "up"
    up.mkdir()
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(os.fspath(up / "sock"))
        assert _summary(up) == []
    finally:
        s.close()


def test_opaque_root_and_plain_tree_walk(tmp_path: Path) -> None:
    up = tmp_path / "up"
    up.mkdir()
    os.setxattr(up, "user.overlay.opaque", b"y")
    (up / ".wh.x").touch()
    assert _summary(up) == [("", "opaque"), ("x", "whiteout")]
    # A flattened tree takes every name literally.
    assert [(c.path, c.kind) for c in walk_tree(up)] == [(".wh.x", "entry")]
