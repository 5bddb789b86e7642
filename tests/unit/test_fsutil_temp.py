"""New temporary names without ``tempfile`` (builder.fsutil.make_temp_dir/_file)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from builder import fsutil


def test_a_temporary_folder_is_new_private_and_named_with_the_prefix(tmp_path: Path) -> None:
    made = [fsutil.make_temp_dir(tmp_path, "work-") for _ in range(50)]
    assert len(set(made)) == 50
    for path in made:
        st = os.lstat(path)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 & ~_umask()
        assert os.path.dirname(path) == str(tmp_path) and os.path.basename(path).startswith("work-")
        assert os.listdir(path) == []


def test_a_temporary_file_is_new_empty_private_and_open(tmp_path: Path) -> None:
    fd, path = fsutil.make_temp_file(tmp_path, ".tmp-", ".part")
    try:
        os.write(fd, b"data")
        st = os.fstat(fd)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 & ~_umask()
        assert os.path.basename(path).startswith(".tmp-") and path.endswith(".part")
        assert os.get_inheritable(fd) is False
    finally:
        os.close(fd)
    assert Path(path).read_bytes() == b"data"


def test_a_taken_name_is_never_reused_and_a_full_folder_is_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # every random name comes out the same: the first call takes it, the next finds none free
    monkeypatch.setattr(fsutil.os, "urandom", lambda n: b"\x01" * n)
    first = fsutil.make_temp_dir(tmp_path, "d-")
    with pytest.raises(FileExistsError):
        fsutil.make_temp_dir(tmp_path, "d-")
    with pytest.raises(FileExistsError):
        fsutil.make_temp_file(tmp_path, "d-")  # the folder holds that name: O_EXCL refuses it
    assert os.listdir(tmp_path) == [os.path.basename(first)]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
