"""The unpacker's threaded file creation: the tree is the same as written one by one, even
where later entries depend on files still in flight (same path twice, a hard link to a
file just read, a file replaced by a directory, a file under a path that was a file),
failures name their entry, and what is in flight stays bounded."""
from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from builder.errors import LayerError
from builder.layers.filewriter import FileWriter, PendingFile
from builder.layers.unpack import unpack_layer
from tests.unit.test_layers_unpack import _tar


def _tree(root: Path) -> dict[str, tuple[str, bytes | str, int]]:
    out: dict[str, tuple[str, bytes | str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("sym", os.readlink(path), 0)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", b"", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", path.read_bytes(), stat.S_IMODE(st.st_mode))
    return out


def test_many_small_files_and_entries_that_depend_on_them(tmp_path: Path) -> None:
    entries: list[tuple[str, str, Any]] = [("d", "dir", None)]
    entries += [(f"d/f{i:04d}", "file", b"x" * (i % 50)) for i in range(600)]
    entries += [
        ("d/f0001", "file", b"second"),                 # the same path again: the last wins
        ("d/hard", "link", "d/f0002"),                  # a hard link to a file just read
        ("d/f0003", "dir", None),                       # a file replaced by a directory
        ("d/f0003/inside", "file", b"in"),
        ("big", "file", b"B" * ((1 << 20) + 5)),        # above the threaded size: written inline
        ("d/f0004", "file", {"data": b"mode", "mode": 0o4750}),
        ("d/f0005", "sym", "f0006"),                    # a file replaced by a symlink
        ("d/f0005", "sym", "f0007"),
    ]
    dest = tmp_path / "dest"
    unpack_layer(_tar_stream(entries), dest)
    tree = _tree(dest)
    assert tree["d/f0001"] == ("file", b"second", 0o644)
    assert tree["d/hard"][1] == b"x" * 2
    assert os.stat(dest / "d/hard").st_ino == os.stat(dest / "d/f0002").st_ino
    assert tree["d/f0003"][0] == "dir" and tree["d/f0003/inside"][1] == b"in"
    assert tree["big"][1] == b"B" * ((1 << 20) + 5)
    assert tree["d/f0004"] == ("file", b"mode", 0o4750)
    assert tree["d/f0005"] == ("sym", "f0007", 0)
    assert tree["d/f0599"] == ("file", b"x" * (599 % 50), 0o644)
    assert os.stat(dest / "d/f0010").st_mtime == 1_600_000_000
    assert len([n for n in tree if n.startswith("d/f")]) == 601


def test_file_then_a_path_under_it_is_refused(tmp_path: Path) -> None:
    stream = _tar_stream([("a", "file", b"1"), ("a/b", "file", b"2")])
    with pytest.raises(LayerError, match="not a directory"):
        unpack_layer(stream, tmp_path / "dest")


def test_a_failed_write_names_its_entry(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    writer = FileWriter(threads=2)
    writer.submit(PendingFile(str(tmp_path / "taken"), "usr/taken", b"x", 0o644, None, (0, 0)))
    with pytest.raises(LayerError, match="'usr/taken'"):
        writer.close()
    writer.abort()
    assert not writer.pending


def test_in_flight_work_is_bounded(tmp_path: Path) -> None:
    writer = FileWriter(threads=2, max_bytes=10, max_files=3)
    for i in range(20):
        writer.submit(PendingFile(str(tmp_path / f"f{i}"), f"f{i}", b"12345", 0o600, None, (0, 0)))
        assert len(writer.pending) <= 2  # two files of 5 bytes fill max_bytes=10
    writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"f{i}" for i in range(20))


def _tar_stream(entries: list[tuple[str, str, Any]]) -> io.BytesIO:
    return io.BytesIO(_tar(*entries))
