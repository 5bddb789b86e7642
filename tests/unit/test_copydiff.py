"""The copy-based snapshotter's layer side (builder.layers.copydiff): the layers below
applied onto a plain folder, and the changes found by comparing it afterwards. No root
needed: the files belong to the user running the tests."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from builder.layers.copydiff import CopiedRoot
from builder.layers.diff import changes


def _snapshot(root: Path, files: dict[str, str | None], dirs: tuple[str, ...] = (),
              opaque: tuple[str, ...] = ()) -> Path:
    """A snapshot folder; a None file is a whiteout (the ``.wh.`` spelling diff.py reads)."""
    root.mkdir()
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    for d in opaque:
        (root / d).mkdir(parents=True, exist_ok=True)
        (root / d / ".wh..wh..opq").write_bytes(b"")
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            (path.parent / (".wh." + path.name)).write_bytes(b"")
        else:
            path.write_text(content)
    return root


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            rel = str(full.relative_to(root))
            out[rel] = "/" if full.is_dir() else full.read_text()
    return out


def _summary(copied: CopiedRoot) -> list[tuple[str, str]]:
    """(kind, path) for each change; entries as "dir", "file" or "link->first"."""
    out = []
    for change in copied.changes():
        if change.kind != "entry":
            out.append((change.kind, change.path))
        elif change.hardlink_to is not None:
            out.append((f"link->{change.hardlink_to}", change.path))
        else:
            out.append(("dir" if stat.S_ISDIR(change.mode) else "file", change.path))
    return out


@pytest.fixture
def lowers(tmp_path: Path) -> list[Path]:
    bottom = _snapshot(tmp_path / "bottom", {"etc/a": "a", "etc/gone": "g", "opq/old": "o",
                                            "keep/k": "k", "hl/one": "1", "deep/er/f": "f"})
    os.link(bottom / "hl/one", bottom / "hl/two")
    top = _snapshot(tmp_path / "top", {"etc/gone": None, "etc/b": "b", "opq/new": "n"},
                    opaque=("opq",))
    return [top, bottom]  # top first, as the solver hands them over


def test_the_copy_is_the_merged_view(lowers: list[Path], tmp_path: Path) -> None:
    copied = CopiedRoot(lowers, tmp_path / "root")
    tree = _tree(copied.path)
    assert tree == {"etc": "/", "etc/a": "a", "etc/b": "b", "opq": "/", "opq/new": "n",
                    "keep": "/", "keep/k": "k", "hl": "/", "hl/one": "1", "hl/two": "1",
                    "deep": "/", "deep/er": "/", "deep/er/f": "f"}
    # hard links of a layer below are separate files, as through overlay
    assert os.stat(copied.path / "hl/one").st_ino != os.stat(copied.path / "hl/two").st_ino
    assert _summary(copied) == []  # nothing changed yet


def test_changes_are_found_as_overlay_would_record_them(lowers: list[Path], tmp_path: Path) -> None:
    copied = CopiedRoot(lowers, tmp_path / "root")
    root = copied.path
    (root / "etc/a").write_text("A")                       # content
    os.unlink(root / "etc/b")                              # deletion
    (root / "new").mkdir()                                 # a new tree
    (root / "new/x").write_text("x")
    os.link(root / "new/x", root / "new/y")                # a link inside the layer
    for rel in ("opq/new",):                               # a dir removed and made again
        os.unlink(root / rel)
    os.rmdir(root / "opq")
    (root / "opq").mkdir()
    (root / "opq/again").write_text("again")
    with open(root / "hl/one", "a") as f:                  # a lower hard link written to
        f.write("+")
    # the same size and mtime as before: only the ctime tells
    before = os.stat(root / "deep/er/f")
    (root / "deep/er/f").write_text("F")
    os.utime(root / "deep/er/f", ns=(before.st_atime_ns, before.st_mtime_ns))
    assert _summary(copied) == [
        ("dir", "deep"), ("dir", "deep/er"), ("file", "deep/er/f"),
        ("dir", "etc"), ("whiteout", "etc/b"), ("file", "etc/a"),
        ("dir", "hl"), ("file", "hl/one"),
        ("dir", "new"), ("file", "new/x"), ("link->new/x", "new/y"),
        ("dir", "opq"), ("opaque", "opq"), ("file", "opq/again"),
    ]


def test_directory_changes_that_only_move_ctime(lowers: list[Path], tmp_path: Path) -> None:
    copied = CopiedRoot(lowers, tmp_path / "root")
    root = copied.path
    os.chmod(root / "keep", stat.S_IMODE(os.stat(root / "keep").st_mode))  # a no-op chmod
    mtime = os.stat(root / "etc").st_mtime_ns
    (root / "etc/tmp").write_text("t")                     # made and removed again,
    os.unlink(root / "etc/tmp")
    os.utime(root / "etc", ns=(mtime, mtime))              # its time put back
    assert [p for _, p in _summary(copied)] == ["etc", "keep"]
    # where the executor made its mount points, only a visible change counts
    assert [c.path for c in copied.changes(touched=["etc", "keep"])] == []


def test_diff_into_writes_a_snapshot_diff_reads_back(lowers: list[Path], tmp_path: Path) -> None:
    copied = CopiedRoot(lowers, tmp_path / "root")
    root = copied.path
    os.unlink(root / "keep/k")
    (root / "etc/c").write_text("c")
    upper = tmp_path / "upper"
    upper.mkdir()
    copied.diff_into(upper)
    assert [(c.kind, c.path) for c in changes(upper)] == [
        ("entry", "etc"), ("entry", "etc/c"), ("entry", "keep"), ("whiteout", "keep/k")]


def test_a_kept_copy_starts_the_next_step_as_overlay_would(lowers: list[Path],
                                                           tmp_path: Path) -> None:
    """After a step, the same copy serves the step on top of it (StepRunner keeps it):
    hard links that step made now belong to a layer below, so a write through one name
    changes that name only, and the folder holding them keeps its times."""
    copied = CopiedRoot(lowers, tmp_path / "root")
    root = copied.path
    (root / "keep/one").write_text("1")
    os.link(root / "keep/one", root / "keep/two")
    os.utime(root / "keep", ns=(1_000_000_000, 1_000_000_000))
    assert [p for _, p in _summary(copied)] == ["keep", "keep/one", "keep/two"]
    copied.rebase()
    assert os.stat(root / "keep/one").st_ino != os.stat(root / "keep/two").st_ino
    assert os.stat(root / "keep").st_mtime_ns == 1_000_000_000
    assert _summary(copied) == []
    with open(root / "keep/one", "a") as f:
        f.write("+")
    assert _summary(copied) == [("dir", "keep"), ("file", "keep/one")]
    assert (root / "keep/two").read_text() == "1"
