"""remove_tree: a step's leftovers go whole, links are removed and never followed."""
from __future__ import annotations

import os
from pathlib import Path

from builder.cache.store import remove_tree


def _tree(root: Path, outside: Path) -> None:
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_text("x")
    (root / "a" / "ro").mkdir()
    (root / "a" / "ro" / "g").write_text("y")
    os.chmod(root / "a" / "ro", 0o555)
    os.symlink(outside, root / "a" / "link-to-dir")
    os.symlink(outside / "kept", root / "link-to-file")
    os.mkfifo(root / "fifo")


def test_a_tree_goes_whole_and_what_links_point_to_stays(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kept").write_text("keep me")
    tree = tmp_path / "tree"
    _tree(tree, outside)
    remove_tree(tree)
    assert not tree.exists() and not tree.is_symlink()
    assert (outside / "kept").read_text() == "keep me"


def test_a_tree_deeper_than_the_plain_walk_goes_too(tmp_path: Path) -> None:
    # the plain walk stops at 64 levels and hands the rest to shutil.rmtree
    tree = tmp_path / "deep"
    leaf = tree.joinpath(*["d"] * 100)
    leaf.mkdir(parents=True)
    (leaf / "f").write_text("x")
    remove_tree(tree)
    assert not tree.exists()


def test_a_file_or_a_link_is_removed_itself(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    remove_tree(link)
    assert not link.is_symlink() and target.is_dir()
    remove_tree(tmp_path / "absent")  # nothing there: nothing to do
