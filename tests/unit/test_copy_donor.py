"""COPY takes unchanged files from a donor (the snapshot an earlier run of the step left)
as hard links, and only files that would come out the same in every recorded way."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.context import DirTree
from builder.copy import SourceSpec, copy_into


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _copy(ctx: Path, dest_root: Path, donor: Path | None) -> None:
    dest_root.mkdir()
    copy_into(dest_root, [SourceSpec.path(DirTree(ctx), "app")], "/src", donor=donor)


def _tree(root: Path) -> dict[str, tuple[int, int, bytes]]:
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns,
                                            path.read_bytes() if path.is_file() else b"")
    return out


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    ctx = tmp_path / "ctx"
    _write(ctx, {f"app/d{i % 3}/f{i}.txt": f"file {i}\n" for i in range(12)})
    _write(ctx, {"app/same-size.txt": "AAAA\n", "app/mode.txt": "m\n", "app/touched.txt": "t\n",
                 "app/xattr.txt": "x\n"})
    donor = tmp_path / "donor"
    _copy(ctx, donor, None)
    return ctx, donor


def test_unchanged_files_are_linked_and_the_result_is_a_plain_copy(setup, tmp_path: Path) -> None:
    ctx, donor = setup
    donor_before = _tree(donor)
    # changes of every kind the check must see
    st = os.stat(ctx / "app/same-size.txt")
    (ctx / "app/same-size.txt").write_text("BBBB\n")  # same size and mtime, other bytes
    os.utime(ctx / "app/same-size.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(ctx / "app/mode.txt", 0o600)
    os.utime(ctx / "app/touched.txt", ns=(1, 1_000_000_000))
    os.setxattr(ctx / "app/xattr.txt", "user.pybuild", b"1")
    (ctx / "app/d0/new.txt").write_text("new\n")

    linked, plain = tmp_path / "linked", tmp_path / "plain"
    _copy(ctx, linked, donor)
    _copy(ctx, plain, None)
    # the same tree as a copy without a donor, byte for byte and in every attribute
    assert _tree(linked) == _tree(plain)
    assert os.getxattr(linked / "src/xattr.txt", "user.pybuild") == b"1"

    def shares(rel: str) -> bool:
        return os.stat(linked / "src" / rel).st_ino == os.stat(donor / "src" / rel).st_ino

    assert all(shares(f"d{i % 3}/f{i}.txt") for i in range(12))
    assert not any(shares(rel) for rel in ("same-size.txt", "mode.txt", "touched.txt", "xattr.txt"))
    # the donor is a finished snapshot: nothing in it changed
    assert _tree(donor) == donor_before


def test_a_donor_inode_is_linked_once(setup, tmp_path: Path) -> None:
    ctx, donor = setup
    # two donor paths that are one inode: a layer's hard links must be the source's only
    os.unlink(donor / "src/d1/f4.txt")
    os.link(donor / "src/d1/f1.txt", donor / "src/d1/f4.txt")
    (ctx / "app/d1/f4.txt").write_text("file 1\n")
    os.utime(ctx / "app/d1/f4.txt", ns=(0, os.stat(donor / "src/d1/f1.txt").st_mtime_ns))
    os.utime(ctx / "app/d1/f1.txt", ns=(0, os.stat(donor / "src/d1/f1.txt").st_mtime_ns))
    linked = tmp_path / "linked"
    _copy(ctx, linked, donor)
    inodes = [os.stat(linked / "src/d1" / n).st_ino for n in ("f1.txt", "f4.txt")]
    assert inodes[0] == os.stat(donor / "src/d1/f1.txt").st_ino  # the first path is linked ...
    assert inodes[1] != inodes[0]  # ... the second is a file of its own
    assert (linked / "src/d1/f4.txt").read_text() == "file 1\n"


def test_a_missing_or_unusable_donor_means_a_plain_copy(setup, tmp_path: Path) -> None:
    ctx, _donor = setup
    out = tmp_path / "out"
    _copy(ctx, out, tmp_path / "no-such-donor")
    assert all(p.stat().st_nlink == 1 for p in out.rglob("*.txt"))
    assert (out / "src/d2/f5.txt").read_text() == "file 5\n"
