"""The layer of a COPY or WORKDIR whose destination no layer below has, or of a COPY of
files new to an existing folder: written straight into the upper directory, its existing
parent folders copied up as overlay would (owner, mode, times), the same entries as a
COPY that meets something below, which goes through the overlay."""
from __future__ import annotations

import os

import pytest

from tests.integration import runbuild
from tests.integration.runbuild import Project

# fixtures
bb_layout = runbuild.bb_layout
project = runbuild.project

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")


def test_copy_into_a_new_folder_copies_up_its_parents(project: Project) -> None:
    project.dockerfile(
        "FROM bb\n"
        "RUN mkdir -p /app/deep && chmod 0750 /app && chown 1000:1002 /app && "
        "echo keep > /app/deep/keep && touch -t 201701010000 /app/deep /app\n"
        "COPY f /app/deep/sub/\n"     # /app/deep/sub is nowhere below: straight into the upper
        "COPY f /app/deep/\n"         # /app/deep exists below, f does not: straight in too
        "COPY keep /app/deep/\n"      # /app/deep/keep exists below: through the overlay
        "COPY f /app/new/dir/\n"      # /app/new is nowhere below
        "COPY --chown=1000:1000 f /fresh\n"
        "COPY --chown=app:other f /named/\n"  # names looked up in the merged view
        "RUN (cat /app/new/dir/f /app/deep/keep /fresh && stat -c '%u:%g %a' /app /fresh) > /check\n",
        f="copied\n", keep="replaced\n")
    os.utime(project.root / "f", ns=(1_600_000_000_000_000_000,) * 2)
    project.build()
    img = project.image()
    # what a step on top sees: the merged view
    assert img.layer(8)["check"][1] == b"copied\nreplaced\ncopied\n1000:1002 750\n1000:1000 644\n"
    below, passed, into, through, direct = (img.layer(i) for i in range(1, 6))
    assert sorted(passed) == ["app", "app/deep", "app/deep/sub", "app/deep/sub/f"]
    assert sorted(into) == ["app", "app/deep", "app/deep/f"]
    assert sorted(through) == ["app", "app/deep", "app/deep/keep"]
    assert sorted(direct) == ["app", "app/new", "app/new/dir", "app/new/dir/f"]
    for layer in (passed, into, through, direct):
        app = layer["app"][0]
        assert (app.mode, app.uid, app.gid) == (0o750, 1000, 1002)
    # as overlay's copy-up: a folder a step only passes through keeps its time; the one it
    # makes something in gets a new one
    old = below["app"][0].mtime
    assert old == below["app/deep"][0].mtime < 1_500_000_000
    assert [layer["app"][0].mtime == old for layer in (passed, into, through, direct)] == [
        True, True, True, False]
    assert passed["app/deep"][0].mtime > old
    assert direct["app/new"][0].mode == 0o755 and direct["app/new/dir/f"][1] == b"copied\n"
    assert into["app/deep/f"][0].mtime == 1_600_000_000 and into["app/deep/f"][1] == b"copied\n"
    assert through["app/deep/keep"][1] == b"replaced\n"
    fresh = img.layer(6)
    assert sorted(fresh) == ["fresh"] and (fresh["fresh"][0].uid, fresh["fresh"][0].gid) == (1000, 1000)
    named = img.layer(7)
    assert sorted(named) == ["named", "named/f"]
    assert {(e.uid, e.gid) for e, _ in named.values()} == {(1000, 1002)}


def test_workdir_made_straight_into_the_upper_dir(project: Project) -> None:
    project.dockerfile(
        "FROM bb\n"
        "RUN mkdir -p /app/deep && chmod 0750 /app && chown 1000:1002 /app\n"
        "WORKDIR /app/new/deeper\n"   # /app/new is nowhere below
        "USER app\n"
        "WORKDIR /srv/mine\n"         # made for the user named, found in the image's passwd
        "WORKDIR /app/deep\n"         # exists: an empty layer
        "RUN stat -c '%u:%g %a %n' /app /app/new/deeper /srv/mine > /tmp/check\n")
    project.build()
    img = project.image()
    made, mine = img.layer(2), img.layer(3)
    assert sorted(made) == ["app", "app/new", "app/new/deeper"]
    assert (made["app"][0].mode, made["app"][0].uid, made["app"][0].gid) == (0o750, 1000, 1002)
    assert made["app/new/deeper"][0].mode == 0o755 and made["app/new/deeper"][0].uid == 0
    assert sorted(mine) == ["srv", "srv/mine"]
    assert (mine["srv/mine"][0].uid, mine["srv/mine"][0].gid) == (1000, 1000)
    assert [h.get("empty_layer", False) for h in img.history][-2] is False
    assert list(img.layer(4)) == []  # WORKDIR of a folder that exists: an empty layer
    assert img.layer(5)["tmp/check"][1] == (b"1000:1002 750 /app\n0:0 755 /app/new/deeper\n"
                                             b"1000:1000 755 /srv/mine\n")


def test_a_copy_run_again_takes_unchanged_files_from_its_last_layer(project: Project) -> None:
    files = {f"app/d{i % 4}/f{i}.txt": f"file {i}\n" * (i + 1) for i in range(40)}
    project.dockerfile("FROM bb\nCOPY app /srv/\nRUN cat /srv/d1/f1.txt > /check\n", **files)
    project.build()
    first = project.image().config["rootfs"]["diff_ids"][1]
    (project.root / "app/d1/f1.txt").write_text("changed\n")
    project.build()
    img = project.image()
    second = img.config["rootfs"]["diff_ids"][1]
    assert second != first and img.layer(2)["check"][1] == b"changed\n"
    snapshots = project.store / "snapshots"
    old, new = snapshots / first.split(":")[1], snapshots / second.split(":")[1]
    # every unchanged file of the new layer is the old layer's file, hard-linked ...
    for rel in files:
        same = os.stat(old / "srv" / rel[4:]).st_ino == os.stat(new / "srv" / rel[4:]).st_ino
        assert same == (rel != "app/d1/f1.txt"), rel
    assert (new / "srv/d1/f1.txt").read_text() == "changed\n"
    assert (old / "srv/d1/f1.txt").read_text() == "file 1\nfile 1\n"
    # ... and the layer is the one a copy without a donor makes of the same files (--no-cache
    # runs the step again with the key its position already has: nothing to take from)
    project.build("--no-cache")
    assert project.image().config["rootfs"]["diff_ids"][1] == second


def test_copy_from_a_stage_links_its_big_files_and_the_layer_is_a_plain_copy(project: Project) -> None:
    big = "".join(f"line {i:06d}\n" for i in range(12_000))  # 144 KiB: linked
    project.dockerfile("FROM bb AS build\nCOPY out /out\n"
                       "FROM bb\nCOPY --from=build /out /app/\n"
                       "COPY --from=build --chmod=700 /out/big /chmod/big\n",
                       **{"out/big": big, "out/small": "small\n"})
    os.utime(project.root / "out/big", ns=(1_600_000_000_000_000_000,) * 2)
    project.build()
    img = project.image()
    snapshots = project.store / "snapshots"
    [source] = [p for p in snapshots.glob("*/out/big")]
    app, chmod = (snapshots / d.split(":")[1] for d in img.config["rootfs"]["diff_ids"][1:3])
    # the big file of the stage is the stage's own file; a small one and a changed one are copies
    assert os.stat(app / "app/big").st_ino == os.stat(source).st_ino
    assert os.stat(app / "app/small").st_ino != os.stat(source.parent / "small").st_ino
    assert os.stat(chmod / "chmod/big").st_ino != os.stat(source).st_ino
    assert (os.stat(source).st_mode & 0o777, source.read_text()) == (0o644, big)  # untouched
    # what the layers hold is a plain copy: a regular file, the source's mode, mtime and bytes
    info, data = img.layer(1)["app/big"]
    assert (info.isreg(), info.mode, info.mtime, data) == (True, 0o644, 1_600_000_000, big.encode())
    info, data = img.layer(2)["chmod/big"]
    assert (info.isreg(), info.mode, data) == (True, 0o700, big.encode())
