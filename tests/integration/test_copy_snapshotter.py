"""The copy-based snapshotter (issue 4, "Snapshots"): where overlay cannot be mounted, a
step runs on a copy of the layers below and its layer is found by comparing the copy
before and after; the image is the one the overlay snapshotter makes, byte for byte.

Each Dockerfile is built twice with SOURCE_DATE_EPOCH (so that two builds of the same
files are the same bytes), once per snapshotter, into two stores; the manifests must
match, and the copy-made layers are also checked entry by entry, so that two empty or
broken builds cannot agree by accident.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import runbuild
from tests.integration.runbuild import Project

# fixtures
bb_layout = runbuild.bb_layout
project = runbuild.project

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps mount overlays: needs root")

# security.capability for cap_net_raw+ep (VFS_CAP_REVISION_2)
CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")

DOCKERFILE = """\
FROM bb
RUN mkdir -p /d/keep /d/gone /opq/sub /deep/er/still /d2f /tmp && chmod 1777 /tmp && \
    echo a > /d/keep/a && echo b > /d/gone/b && echo x > /opq/x && echo y > /opq/sub/y && \
    echo f > /f2d && echo in > /d2f/in && echo h > /h1 && echo del > /del && \
    echo s > /deep/er/still/s && echo l > /lower1 && ln /lower1 /lower2 && \
    chmod 0711 /deep && chown 1000:1002 /deep/er
RUN rm -rf /d/gone /del /opq && mkdir /opq && echo new > /opq/n && rm /f2d && mkdir /f2d && \
    echo c > /f2d/c && rm -rf /d2f && echo file > /d2f && ln /h1 /h2 && echo pair > /p1 && \
    ln /p1 /p2 && mkfifo /fifo && mknod /null2 c 1 3 && cp /bin/busybox /suid && \
    chmod 4755 /suid && chmod 2750 /d/keep && echo t > /deep/er/still/t && \
    ln -s ../d/keep/a /sym && echo more >> /lower1 && touch -t 200101010000 /deep/er/still/s
RUN for d in $(seq 0 19); do mkdir -p /many/$d; \
    for f in $(seq 0 99); do echo $d.$f > /many/$d/f$f; done; done
RUN rm -rf /many/1* && echo again > /many/0/f0 && chmod 600 /many/2/f2
COPY --chown=1000:1000 tree/ /copied/
WORKDIR /w/x
USER 1000:1000
RUN --mount=type=tmpfs,target=/t --mount=type=cache,target=/var/cache/c \
    --mount=type=bind,target=/ctx echo made > /tmp/mine && cat /ctx/tree/f > /tmp/from-ctx
USER root
RUN true
"""

EPOCH = {"SOURCE_DATE_EPOCH": "1700000000", "PYBUILD_NO_REPLAY": "1"}


def _context(project: Project) -> None:
    project.dockerfile(DOCKERFILE)
    tree = project.root / "tree"
    tree.mkdir()
    (tree / "f").write_text("from the context\n")
    capped = tree / "capped"
    capped.write_text("cap\n")
    os.setxattr(capped, "security.capability", CAP_NET_RAW)
    os.setxattr(capped, "user.note", b"kept")


def _build(project: Project, store: Path, out: str, snapshotter: str,
           ) -> tuple[str, runbuild.OciImage, str]:
    at = Project(project.root, store, project.out.with_name(out), project.contexts)
    proc = at.build(env={**EPOCH, "PYBUILD_SNAPSHOTTER": snapshotter})
    return at.metadata()["containerimage.digest"], at.image(), proc.stderr


def _check_layers(img: runbuild.OciImage) -> None:
    """What the copy snapshotter made, entry by entry (the overlay's layers for these
    steps are checked the same way in test_run_layers.py)."""
    first, second, many, pruned = (img.layer(i) for i in (1, 2, 3, 4))
    assert {"lower1", "lower2"} <= set(first) and first["lower2"][0].islnk()
    names = list(second)
    assert {"d/.wh.gone", ".wh.del"} <= set(names)
    assert [n for n in names if n.startswith("opq/")] == ["opq/.wh..wh..opq", "opq/n"]
    assert second["f2d"][0].isdir() and second["f2d/c"][1] == b"c\n"
    assert second["d2f"][0].isreg() and not [n for n in names if n.startswith("d2f/")]
    assert second["p2"][0].islnk() and second["p2"][0].linkname == "p1"
    assert {second["h1"][0].islnk(), second["h2"][0].islnk()} == {True, False}
    # a file of a layer below written through one of its names: that name only, as overlay
    assert second["lower1"][1] == b"l\nmore\n" and "lower2" not in second
    assert second["fifo"][0].isfifo() and second["null2"][0].ischr()
    assert second["suid"][0].mode == 0o4755 and second["d/keep"][0].mode == 0o2750
    assert second["sym"][0].linkname == "../d/keep/a"
    assert second["deep/er/still/s"][0].mtime == 978307200  # only its time changed
    assert (second["deep/er"][0].uid, second["deep/er"][0].gid) == (1000, 1002)
    assert len([n for n in many if n.startswith("many/") and "/f" in n]) == 2000
    assert {n for n in pruned if "/.wh." in n} == {f"many/.wh.{i}" for i in [1, *range(10, 20)]}
    assert pruned["many/2/f2"][0].mode == 0o600 and pruned["many/0/f0"][1] == b"again\n"
    copied = img.layer(5)
    pax = copied["copied/capped"][0].pax_headers
    assert pax.get("SCHILY.xattr.user.note") == "kept"
    assert "SCHILY.xattr.security.capability" in pax
    run = img.layer(7)
    assert run["tmp/mine"][1] == b"made\n" and run["tmp/from-ctx"][1] == b"from the context\n"
    # nothing the executor made for the step: mount points, /dev, /etc/hosts, ...
    assert not [n for n in run if n.split("/")[0] in ("t", "ctx", "dev", "proc", "sys", "etc", "var")]
    assert [h.get("empty_layer", False) for h in img.history][-1] is False  # RUN true
    assert list(img.layer(len(img.layer_digests) - 1)) == []  # ... has an empty layer


def test_copy_snapshotter_makes_the_overlay_image(project: Project, tmp_path: Path) -> None:
    _context(project)
    overlay, _, _ = _build(project, tmp_path / "s-overlay", "overlay.tar", "overlay")
    copy, img, _ = _build(project, tmp_path / "s-copy", "copy.tar", "copy")
    _check_layers(img)
    assert copy == overlay
    # and nothing of the copies is left in the store
    assert list((tmp_path / "s-copy" / "tmp").iterdir()) == []


@pytest.fixture
def overlay_store(tmp_path: Path) -> Iterator[Path]:
    """A folder on an overlayfs mount: the kernel refuses overlayfs as an upper layer, so
    a store here cannot give its steps overlays."""
    parts = {name: tmp_path / name for name in ("l", "u", "w", "m")}
    for path in parts.values():
        path.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={parts['l']},upperdir={parts['u']},workdir={parts['w']}",
                    str(parts["m"])], check=True)
    try:
        yield parts["m"] / "store"
    finally:
        subprocess.run(["umount", "-l", str(parts["m"])], check=True)


def test_falls_back_to_copies_where_overlay_is_refused(project: Project, tmp_path: Path,
                                                       overlay_store: Path) -> None:
    _context(project)
    reference, _, _ = _build(project, tmp_path / "s-overlay", "overlay.tar", "overlay")
    digest, img, stderr = _build(project, overlay_store, "fallback.tar", "auto")
    assert "overlayfs cannot be mounted for the store" in stderr
    assert "steps run on copies of their root filesystem" in stderr
    assert stderr.count("overlayfs cannot be mounted") == 1  # said once, not per step
    _check_layers(img)
    assert digest == reference
    # the same store, asked for overlays outright, fails clearly instead
    again = Project(project.root, overlay_store, project.out, project.contexts)
    project.dockerfile(DOCKERFILE.replace("RUN true", "RUN echo other > /other"))
    proc = again.build(check=False, env={**EPOCH, "PYBUILD_SNAPSHOTTER": "overlay"})
    assert proc.returncode == 1
    assert "cannot mount the step's root filesystem" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_snapshotter_is_a_usage_error(project: Project) -> None:
    project.dockerfile("FROM bb\nRUN true\n")
    proc = project.build(check=False, env={"PYBUILD_SNAPSHOTTER": "vfs"})
    assert proc.returncode == 2
    assert "PYBUILD_SNAPSHOTTER='vfs' is not a snapshotter" in proc.stderr
    assert "use auto (the default), overlay or copy" in proc.stderr


def test_pybuild_run_on_a_copy(project: Project) -> None:
    project.dockerfile("FROM bb\nRUN echo made by the step > /hi\n")
    env = {"PYBUILD_SNAPSHOTTER": "copy"}
    runbuild.pybuild("build", "--root", str(project.store), "--build-context", project.contexts[0],
                     "-t", "copied:latest", str(project.root), env=env)
    ran = runbuild.pybuild("run", "--root", str(project.store), "copied:latest", "sh", "-c",
                           "cat /hi; echo changed > /hi", env=env)
    assert ran.stdout == "made by the step\n"
    again = runbuild.pybuild("run", "--root", str(project.store), "copied:latest", "cat", "/hi",
                             env=env)
    assert again.stdout == "made by the step\n"  # what a run changed was thrown away
    assert list((project.store / "tmp").iterdir()) == []
