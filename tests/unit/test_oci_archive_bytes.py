"""builder.oci.archive writes its tar itself (headers from TarInfo, blob bodies copied by the
kernel): its bytes must stay exactly what tarfile writes, so archive digests do not move."""
from __future__ import annotations

import errno
import io
import os
import tarfile
from pathlib import Path

import pytest

from builder.errors import LayerError
from builder.oci import archive
from builder.oci.archive import write_docker_archive, write_oci_archive

from tests.unit.test_oci_archive import make_image


def _tarfile_bytes(path: Path) -> bytes:
    """The same members re-written by tarfile (PAX format, as the writer used to)."""
    out = io.BytesIO()
    with tarfile.open(path) as src, tarfile.open(fileobj=out, mode="w",
                                                 format=tarfile.PAX_FORMAT) as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    return out.getvalue()


@pytest.mark.parametrize("writer", [write_oci_archive, write_docker_archive])
@pytest.mark.parametrize("epoch", [None, 1700000000])
def test_archive_bytes_are_what_tarfile_writes(tmp_path, writer, epoch):
    image = make_image(tmp_path)
    # blobs of many blocks, and of a part of one: the padding after a kernel copy
    sizes = [image.blob_path(d.digest).stat().st_size for d in image.layers]
    assert max(sizes) > 4096 and any(size % 512 for size in sizes)
    path = writer(tmp_path / "x.tar", image, ["app", "example.com/x/y:v1"],
                  source_date_epoch=epoch)
    data = path.read_bytes()
    assert len(data) % tarfile.RECORDSIZE == 0
    assert data == _tarfile_bytes(path)


@pytest.mark.parametrize("missing", [["copy_file_range"], ["copy_file_range", "sendfile"]])
def test_archive_without_kernel_copy_is_the_same(tmp_path, monkeypatch, missing):
    """Where copy_file_range (another filesystem, an old kernel) or sendfile is refused, the
    next way is taken and the bytes do not change."""
    image = make_image(tmp_path)
    want = write_oci_archive(tmp_path / "a.tar", image, ["app"]).read_bytes()

    def refuse(*args: object) -> int:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    for name in missing:
        monkeypatch.setattr(archive.os, name, refuse)
    assert write_oci_archive(tmp_path / "b.tar", image, ["app"]).read_bytes() == want


def test_a_blob_that_shrinks_during_the_copy_is_an_error(tmp_path, monkeypatch):
    image = make_image(tmp_path)
    real = archive.os.copy_file_range

    def shrunk(src: int, dst: int, count: int, offset_src: int | None = None) -> int:
        if os.fstat(src).st_size > 1000:  # the big layer: pretend it ended here
            return 0
        return real(src, dst, count, offset_src)

    monkeypatch.setattr(archive.os, "copy_file_range", shrunk)
    with pytest.raises(LayerError, match="ended after 0 of"):
        write_oci_archive(tmp_path / "a.tar", image)
    assert not (tmp_path / "a.tar").exists() and not list(tmp_path.glob(".a.tar.tmp-*"))
