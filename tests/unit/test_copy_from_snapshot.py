"""COPY --from a stage or an image hard-links a big file from the snapshot the overlay
shows it from, and only when the copy would keep every recorded attribute of it."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.context import DirTree
from builder.copy import LINK_SOURCE_MIN, SourceSpec, copy_into

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts an overlay: needs root")

BIG = b"x" * LINK_SOURCE_MIN


@pytest.fixture
def layers(tmp_path: Path) -> Iterator[tuple[DirTree, Path, Path]]:
    from builder.executor import RootFS, mounted_rootfs

    bottom, top = tmp_path / "bottom", tmp_path / "top"
    for layer in (bottom, top):
        (layer / "src").mkdir(parents=True)
    for name in ("plain", "xattr", "shadowed", "owned"):
        (bottom / "src" / name).write_bytes(BIG)
    (top / "src/shadowed").write_bytes(BIG.upper())  # the overlay shows this one
    (bottom / "src/small").write_bytes(b"s" * (LINK_SOURCE_MIN - 1))
    os.setxattr(bottom / "src/xattr", "user.pybuild", b"1")
    os.chown(bottom / "src/owned", 1000, 1000)
    with mounted_rootfs(RootFS([top, bottom], upper=None, work=None)) as root:  # type: ignore[arg-type]
        yield DirTree(root, snapshots=[top, bottom]), top, bottom


def _copy(tree: DirTree, dest: Path, **kw: object) -> None:
    dest.mkdir()
    copy_into(dest, [SourceSpec.path(tree, "src")], "/app/", **kw)  # type: ignore[arg-type]


def test_files_kept_as_they_are_are_linked_from_the_layer_that_shows_them(layers, tmp_path: Path) -> None:
    tree, top, bottom = layers
    _copy(tree, tmp_path / "dest")

    def same(name: str, layer: Path) -> bool:
        return os.stat(tmp_path / "dest/app" / name).st_ino == os.stat(layer / "src" / name).st_ino

    assert same("plain", bottom) and same("owned", bottom)
    assert same("shadowed", top) and (tmp_path / "dest/app/shadowed").read_bytes() == BIG.upper()
    assert not same("xattr", bottom) and not same("small", bottom)
    assert os.getxattr(tmp_path / "dest/app/xattr", "user.pybuild") == b"1"
    assert os.stat(tmp_path / "dest/app/owned").st_uid == 1000


def test_a_file_the_copy_changes_is_written(layers, tmp_path: Path) -> None:
    tree, _, bottom = layers
    _copy(tree, tmp_path / "chown", chown=(0, 0))
    assert os.stat(tmp_path / "chown/app/owned").st_ino != os.stat(bottom / "src/owned").st_ino
    assert os.stat(tmp_path / "chown/app/owned").st_uid == 0
    _copy(tree, tmp_path / "clamp", mtime=1)
    assert os.stat(tmp_path / "clamp/app/plain").st_ino != os.stat(bottom / "src/plain").st_ino
    assert os.stat(tmp_path / "clamp/app/plain").st_mtime == 1
    assert os.stat(bottom / "src/plain").st_mtime != 1  # the snapshot is untouched
