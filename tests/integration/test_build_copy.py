"""COPY and ADD through real builds: every flag that needs no RUN, the directory rules,
archives, heredocs, and --link's layer reuse on another base."""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from tests.fixtures.buildtools import oci_config, oci_rootfs, pybuild, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")


def _targz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o640
            info.uid, info.gid = 123, 456
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _stat(root: Path, rel: str) -> tuple[int, int, int]:
    st = os.lstat(root / rel)
    return st.st_mode & 0o7777, st.st_uid, st.st_gid


def test_copy_and_add_flags(project: Path, store: str, local_busybox: Path, tmp_path: Path) -> None:
    write(project, {
        "src/a.txt": "a\n", "src/b.log": "b\n", "src/sub/c.txt": "c\n",
        "tree/x/y/z.txt": "z\n", "single.txt": "one\n", "bundle.tgz": _targz({"pkg/data.txt": b"data\n"}),
        "Dockerfile": (
            "FROM base\n"
            "WORKDIR /w\n"
            "COPY --chown=nobody:nogroup single.txt owned.txt\n"
            "COPY --chown=1234 single.txt numeric.txt\n"
            "COPY --chmod=0600 single.txt private.txt\n"
            "COPY --exclude=*.log src/ /excluded/\n"
            "COPY --parents tree/./x/y/z.txt /parents/\n"
            "COPY src/*.txt /glob/\n"
            "COPY single.txt /existing-dir\n"
            "ADD bundle.tgz /unpacked/\n"
            "COPY bundle.tgz /kept/\n"
            "COPY <<EOF /etc/heredoc.conf\nkey=$HOME\nEOF\n"),
    })
    (project / "Dockerfile").write_text((project / "Dockerfile").read_text().replace(
        "FROM base\n", "FROM base\nRUN mkdir /existing-dir\n"))
    out = tmp_path / "img.tar"
    pybuild("build", "--root", store, "--build-context", f"base=oci-layout://{local_busybox}:latest",
            "-o", f"type=oci,dest={out}", str(project))
    root = oci_rootfs(out, tmp_path / "unpacked")
    # --chown by name through the image's passwd/group; a bare number is uid and gid
    assert _stat(root, "w/owned.txt")[1:] == (65534, 65534)
    assert _stat(root, "w/numeric.txt")[1:] == (1234, 1234)
    assert _stat(root, "w/private.txt")[0] == 0o600
    # a directory source copies its contents; --exclude drops the matches
    assert sorted(p.name for p in (root / "excluded").rglob("*")) == ["a.txt", "c.txt", "sub"]
    # --parents keeps the path below the /./ pivot
    assert (root / "parents/x/y/z.txt").read_text() == "z\n"
    assert sorted(p.name for p in (root / "glob").iterdir()) == ["a.txt"]
    # a file copied to an existing directory goes inside it
    assert (root / "existing-dir/single.txt").read_text() == "one\n"
    # ADD extracts a local archive (detected by content) keeping its owners; COPY does not
    assert (root / "unpacked/pkg/data.txt").read_text() == "data\n"
    assert _stat(root, "unpacked/pkg/data.txt") == (0o640, 123, 456)
    assert (root / "kept/bundle.tgz").read_bytes()[:2] == b"\x1f\x8b"
    # a heredoc source, its variables expanded from the image's environment
    assert (root / "etc/heredoc.conf").read_text() == "key=\n"
    cfg = oci_config(f"oci-archive:{out}")
    created_by = [h["created_by"] for h in cfg["history"] if h.get("comment") == "buildkit.dockerfile.v0"]
    assert "COPY --chown=nobody:nogroup single.txt owned.txt # buildkit" in created_by
    assert "COPY --parents tree/./x/y/z.txt /parents/ # buildkit" in created_by
    assert "COPY <<EOF /etc/heredoc.conf # buildkit" in created_by


def test_copy_link_layer_is_reused_on_another_base(project: Path, store: str, local_busybox: Path,
                                                  tmp_path: Path) -> None:
    write(project, {"app.txt": "app\n", "Dockerfile": "FROM base\nCOPY --link app.txt /app/\n"})
    other = tmp_path / "other-base"
    other.mkdir()
    (other / "marker").write_text("another base\n")
    meta1, meta2 = tmp_path / "m1.json", tmp_path / "m2.json"
    pybuild("build", "--root", store, "--build-context", f"base=oci-layout://{local_busybox}:latest",
            "--metadata-file", str(meta1), "-o", f"type=oci,dest={tmp_path / 'a.tar'}", str(project))
    pybuild("build", "--root", store, "--build-context", f"base={other}",
            "--metadata-file", str(meta2), "-o", f"type=oci,dest={tmp_path / 'b.tar'}", str(project))
    step1 = json.loads(meta1.read_text())["pybuild.steps"][-1]
    step2 = json.loads(meta2.read_text())["pybuild.steps"][-1]
    # the --link layer does not depend on what is below it: same layer, taken from the cache
    assert step2["cached"] is True
    assert step2["layer"] == step1["layer"]
    a = oci_config(f"oci-archive:{tmp_path / 'a.tar'}")["rootfs"]["diff_ids"]
    b = oci_config(f"oci-archive:{tmp_path / 'b.tar'}")["rootfs"]["diff_ids"]
    assert a[-1] == b[-1] and a[0] != b[0]
    root = oci_rootfs(tmp_path / "b.tar", tmp_path / "ub")
    assert (root / "app/app.txt").read_text() == "app\n"
    assert (root / "marker").read_text() == "another base\n"
