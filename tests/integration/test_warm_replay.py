"""A fully cached rebuild is answered from its memo (builder.warm) without building, and
only when nothing it depends on can have changed: the context, the Dockerfile, the
arguments and environment, the base image's name, the cache and the image in the store.

Whether a run was a replay is seen from what Python imported (PYTHONPROFILEIMPORTTIME):
a replay never loads the solver."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.fixtures.buildtools import pybuild, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")

DOCKERFILE = "FROM bb:1\nARG V=1\nWORKDIR /app\nCOPY . /app\nRUN echo $V > /v\n"


def build(store: Path, ctx: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[bool, str, str]:
    """(replayed?, stdout, the build's own stderr lines) of `pybuild build`."""
    proc = pybuild("build", "--root", str(store), *extra, str(ctx),
                   env={"PYTHONPROFILEIMPORTTIME": "1", **(env or {})})
    imports = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    shown = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    built = any(line.rstrip().endswith("builder.solve") for line in imports)
    return not built, proc.stdout, shown


def settle(*paths: Path) -> None:
    """Make the files look older than the memo's racy window (two seconds), as files
    edited a while before a build are."""
    old = time.time() - 10
    for path in paths:
        for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
            os.utime(p, (old, old), follow_symlinks=False)
    time.sleep(2.1)  # ctime cannot be set back: wait it out


@pytest.fixture
def project(tmp_path: Path, busybox_rootfs: Path) -> tuple[Path, Path]:
    store = tmp_path / "store"
    pybuild("import", "--root", str(store), str(busybox_rootfs), "bb:1")
    ctx = write(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "app/main.py": "a\n",
                                   ".dockerignore": "junk\n"})
    settle(ctx)
    return store, ctx


def test_replay_shows_what_the_build_showed(project: tuple[Path, Path], tmp_path: Path) -> None:
    store, ctx = project
    meta = [f"--metadata-file={tmp_path / 'meta.json'}", "--iidfile", str(tmp_path / "iid"),
            "--progress=plain", "-t", "app:1"]
    replayed, _, cold = build(store, ctx, *meta)
    assert not replayed and "(0/3 steps cached)" in cold
    assert "#4 DONE" in cold  # the RUN ran
    # the same build looking every step up (what a replay must show)
    replayed, _, warm = build(store, ctx, *meta, env={"PYBUILD_NO_REPLAY": "1"})
    assert not replayed and "(3/3 steps cached)" in warm
    warm_meta = json.loads((tmp_path / "meta.json").read_text())
    for step in warm_meta["pybuild.steps"]:
        step["duration"] = 0.0  # a replay finds every step at once
    warm_meta = json.dumps(warm_meta, indent=2) + "\n"
    (tmp_path / "meta.json").unlink()
    (tmp_path / "iid").unlink()
    usage = sorted((store / "usage").iterdir())
    hits = [p.stat().st_size for p in usage]

    replayed, _, again = build(store, ctx, *meta)  # remembered by the cold build
    assert replayed
    strip = [line for line in warm.splitlines() if not line.startswith("built ") and "DONE" not in line]
    assert [line for line in again.splitlines() if not line.startswith("built ") and "DONE" not in line] == strip
    image_id = json.loads(warm_meta)["containerimage.config.digest"]
    assert f"built app:1 {image_id} in" in again and "(3/3 steps cached)" in again
    assert (tmp_path / "meta.json").read_text() == warm_meta
    assert (tmp_path / "iid").read_text() == image_id
    assert [p.stat().st_size for p in usage] == [h + 1 for h in hits]  # a hit counted per step

    # -q prints the image ID on stdout, the same with or without a replay
    assert build(store, ctx, "-q", "-t", "app:1")[1].strip() == image_id
    replayed, out, _ = build(store, ctx, "-q", "-t", "app:1")
    assert replayed and out.strip() == image_id
    rows = [line.split()[:3] for line in pybuild("images", "--root", str(store)).stdout.splitlines()]
    assert ["app", "1", image_id[7:19]] in rows


def test_any_change_builds_for_real(project: tuple[Path, Path]) -> None:
    store, ctx = project
    build(store, ctx, "-t", "app:1")
    build(store, ctx, "-t", "app:1")
    assert build(store, ctx, "-t", "app:1")[0]

    # a file of the context: its content (the same size) changed
    (ctx / "app" / "main.py").write_text("b\n")
    replayed, _, shown = build(store, ctx, "-t", "app:1")
    assert not replayed and "(1/3 steps cached)" in shown
    # ... and changed right before that build: no memo is trusted from it (racily clean)
    assert not build(store, ctx, "-t", "app:1")[0]
    settle(ctx)
    assert not build(store, ctx, "-t", "app:1")[0]  # remembers now
    assert build(store, ctx, "-t", "app:1")[0]

    # an ignored file changes nothing; a new file does
    (ctx / "junk").write_text("ignored\n")
    assert build(store, ctx, "-t", "app:1")[0]
    (ctx / "app" / "new.py").write_text("new\n")
    assert not build(store, ctx, "-t", "app:1")[0]
    (ctx / "app" / "new.py").unlink()

    # another build arg, or the environment a `--build-arg NAME` reads
    replayed, _, shown = build(store, ctx, "-t", "app:1", "--build-arg", "V=2")
    assert not replayed and "(2/3 steps cached)" in shown
    settle(ctx)
    for _ in range(2):  # runs the RUN, then remembers the fully cached build
        build(store, ctx, "-t", "app:1", "--build-arg", "V", env={"V": "3"})
    assert build(store, ctx, "-t", "app:1", "--build-arg", "V", env={"V": "3"})[0]
    replayed, _, shown = build(store, ctx, "-t", "app:1", "--build-arg", "V", env={"V": "4"})
    assert not replayed and "(2/3 steps cached)" in shown


def test_a_big_context_walked_by_two_processes_still_sees_every_change(project: tuple[Path, Path]) -> None:
    # 3,000 entries: past warm.SPLIT_AT, so a second process stats half of the folders
    # (on a machine with one CPU the walk stays whole, and this checks that instead)
    store, ctx = project
    for d in range(30):
        write(ctx / "app" / f"d{d:02}", {f"f{i:03}.txt": f"{d} {i}\n" for i in range(99)})
    settle(ctx)
    assert not build(store, ctx, "-t", "app:1")[0]
    assert build(store, ctx, "-t", "app:1")[0]
    for d in range(30):  # one file in each folder in turn, whichever process walks it
        if d % 7:
            continue
        target = ctx / "app" / f"d{d:02}" / "f050.txt"
        target.write_text(f"{d} changed\n")  # the same size
        settle(target)
        replayed, _, shown = build(store, ctx, "-t", "app:1")
        assert not replayed and "(1/3 steps cached)" in shown, d
        assert build(store, ctx, "-t", "app:1")[0]


def test_the_store_must_still_hold_it(project: tuple[Path, Path], busybox_rootfs: Path,
                                      tmp_path: Path) -> None:
    store, ctx = project
    build(store, ctx, "-t", "app:1")
    build(store, ctx, "-t", "app:1")
    assert build(store, ctx, "-t", "app:1")[0]

    # the tag moved elsewhere: a real build puts it back
    pybuild("tag", "--root", str(store), "bb:1", "app:1")
    assert not build(store, ctx, "-t", "app:1")[0]
    assert pybuild("inspect", "--root", str(store), "app:1").stdout != \
        pybuild("inspect", "--root", str(store), "bb:1").stdout
    build(store, ctx, "-t", "app:1")
    assert build(store, ctx, "-t", "app:1")[0]

    # the base image's name now means another image
    other = tmp_path / "other-rootfs"
    shutil.copytree(busybox_rootfs, other, symlinks=True)
    (other / "marker").write_text("x\n")
    pybuild("import", "--root", str(store), str(other), "bb:1")
    replayed, _, shown = build(store, ctx, "-t", "app:1")
    assert not replayed and "(0/3 steps cached)" in shown
    pybuild("import", "--root", str(store), str(busybox_rootfs), "bb:1")  # (a new image: created now)
    build(store, ctx, "-t", "app:1")
    build(store, ctx, "-t", "app:1")
    assert build(store, ctx, "-t", "app:1")[0]

    # the cache was pruned: the steps run again
    pybuild("cache", "prune", "--all", "--root", str(store))
    replayed, _, shown = build(store, ctx, "-t", "app:1")
    assert not replayed and "(0/3 steps cached)" in shown


def test_never_replayed(project: tuple[Path, Path], tmp_path: Path) -> None:
    """Outputs, --no-cache and the like always build; so does a Dockerfile that fetches."""
    store, ctx = project
    for _ in range(2):
        build(store, ctx, "-t", "app:1", "-o", f"type=oci,dest={tmp_path / 'out.tar'}")
    (tmp_path / "out.tar").unlink()
    replayed, _, _ = build(store, ctx, "-t", "app:1", "-o", f"type=oci,dest={tmp_path / 'out.tar'}")
    assert not replayed and (tmp_path / "out.tar").stat().st_size > 0
    for flags in (["--no-cache"], ["--explain"], ["--progress=plain", "--no-cache-filter", "stage-0"]):
        assert not build(store, ctx, *flags)[0]


def test_a_no_cache_build_is_remembered_for_the_same_command_without_it(
        project: tuple[Path, Path], tmp_path: Path) -> None:
    store, ctx = project
    iid = tmp_path / "iid"
    replayed, _, cold = build(store, ctx, "--progress=plain", "-t", "app:1", "--iidfile", str(iid))
    assert not replayed and "(0/3 steps cached)" in cold
    first = iid.read_text()
    # --no-cache runs every step again (a new image: the RUN's layer has new times) ...
    replayed, _, fresh = build(store, ctx, "--progress=plain", "--no-cache", "-t", "app:1",
                               "--iidfile", str(iid))
    assert not replayed and "(0/3 steps cached)" in fresh
    third = iid.read_text()
    assert third != first
    assert json.loads(pybuild("inspect", "--root", str(store), "app:1").stdout)[0]["Id"] == third
    # ... and the same command without it is answered at once, with that build's image,
    # every step shown cached, as a real build would show it
    replayed, _, warm = build(store, ctx, "--progress=plain", "-t", "app:1", "--iidfile", str(iid))
    assert replayed and "(3/3 steps cached)" in warm
    assert iid.read_text() == third
    replayed, _, real = build(store, ctx, "--progress=plain", "-t", "app:1", "--iidfile", str(iid),
                              env={"PYBUILD_NO_REPLAY": "1"})
    assert not replayed and "(3/3 steps cached)" in real and iid.read_text() == third

    add = write(tmp_path / "addctx", {"Dockerfile": "FROM bb:1\nARG SRC\nADD ${SRC} /x\n"})
    settle(add)
    for _ in range(3):
        replayed, _, _ = build(store, add, "--build-arg", "SRC=Dockerfile")
        assert not replayed


def test_a_base_from_an_oci_layout(tmp_path: Path) -> None:
    """`--build-context NAME=oci-layout://DIR` replays too, until the layout names another image."""
    if not os.path.exists("/bin/busybox"):
        pytest.skip("/bin/busybox is missing (apt-get install busybox-static)")
    from tests.fixtures.registry import busybox_layer, host_arch, write_image_layout

    layout = tmp_path / "layout"
    write_image_layout(layout, "latest", [busybox_layer()], arch=host_arch(), cmd=["sh"])
    store = tmp_path / "store"
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM bb\nRUN echo hi > /hi\n"})
    settle(ctx)
    flags = ["--build-context", f"bb=oci-layout://{layout}:latest", "-t", "x:1"]
    build(store, ctx, *flags)
    build(store, ctx, *flags)
    replayed, _, shown = build(store, ctx, *flags)
    assert replayed and "(1/1 steps cached)" in shown
    config = json.loads(pybuild("inspect", "--root", str(store), "x:1").stdout)[0]

    shutil.rmtree(layout)
    write_image_layout(layout, "latest", [busybox_layer()], arch=host_arch(), cmd=["sh", "-l"])
    replayed, _, shown = build(store, ctx, *flags)
    assert not replayed and "(0/1 steps cached)" in shown
    assert json.loads(pybuild("inspect", "--root", str(store), "x:1").stdout)[0]["Id"] != config["Id"]
