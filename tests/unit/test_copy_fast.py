"""The fast paths of COPY: kernel-side file copies with their fallbacks, the thread pool
that writes a directory's files, and the explainer's file list taken from the copy itself."""
from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest

from builder import copy as copymod
from builder import fsutil
from builder.cache.history import Explainer
from builder.cache.keys import base_key, step_key
from builder.cache.store import Store
from builder.context import BuildContext
from builder.copy import SourceSpec, copy_into


def _big(path: Path, size: int) -> bytes:
    data = hashlib.sha256(b"seed").digest() * (size // 32) + b"tail"
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("allowed", [("copy_file_range", "sendfile"), ("sendfile",), ()])
def test_each_way_of_copying_gives_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  allowed: tuple[str, ...]) -> None:
    monkeypatch.setattr(fsutil, "_methods", {name: name in allowed and hasattr(os, name)
                                              for name in ("copy_file_range", "sendfile")})
    monkeypatch.setattr(fsutil, "_KERNEL_CHUNK", 1 << 20)  # several calls per file
    for size in (0, 5, 3 * (1 << 20) + 7):
        src, dst = tmp_path / f"src{size}", tmp_path / f"dst{size}"
        data = _big(src, size) if size else b""
        src.write_bytes(data)  # (the empty one)
        sfd, dfd = os.open(src, os.O_RDONLY), os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            fsutil.copy_fd(sfd, dfd)
        finally:
            os.close(sfd)
            os.close(dfd)
        assert dst.read_bytes() == data


def test_pool_hands_the_first_error_to_drain_and_bounds_what_waits() -> None:
    pool = copymod._FilePool(2, limit=3)
    seen: list[int] = []
    most = [0]
    gate = threading.Event()

    def job(n: int) -> None:
        gate.wait(5)
        most[0] = max(most[0], pool._pending)
        seen.append(n)
        if n == 4:
            raise OSError(28, "No space left on device", "/x")

    try:
        threading.Timer(0.2, gate.set).start()
        with pytest.raises(OSError, match="No space"):  # from submit (no more files) or drain
            for n in range(10):
                pool.submit(job, n)
            pool.drain()
        pool.drain()  # the error was handed over once
        assert 4 in seen and most[0] <= 3
    finally:
        pool.close()


def test_a_large_tree_keeps_contents_modes_and_times(tmp_path: Path) -> None:
    ctx_dir = tmp_path / "ctx"
    for d in range(12):
        sub = ctx_dir / f"d{d:02}" / "inner"
        sub.mkdir(parents=True)
        for f in range(40):
            p = sub / f"f{f}.txt"
            p.write_text(f"{d}-{f}\n" * (f + 1))
            os.chmod(p, 0o600 if f % 3 else 0o755)
            os.utime(p, ns=(1_000_000_000 * (d + 1), 1_000_000_000 * (f + 7)))
        for dirpath in (sub, sub.parent):
            os.utime(dirpath, ns=(5_000_000_000, 6_000_000_000 + d))
    _big(ctx_dir / "big.bin", 2 * (1 << 20))
    ctx = BuildContext.open(ctx_dir)
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    copy_into(rootfs, [SourceSpec.path(ctx, ".")], "/src/")
    for src in ctx_dir.rglob("*"):
        dst = rootfs / "src" / src.relative_to(ctx_dir)
        a, b = os.lstat(src), os.lstat(dst)
        assert (stat.S_IFMT(a.st_mode), stat.S_IMODE(a.st_mode)) == (stat.S_IFMT(b.st_mode), stat.S_IMODE(b.st_mode))
        assert a.st_mtime_ns == b.st_mtime_ns, dst  # directories re-timed after their children
        if src.is_file():
            assert src.read_bytes() == dst.read_bytes()


def test_threaded_files_replace_and_refuse_as_one_thread_did(tmp_path: Path) -> None:
    ctx_dir = tmp_path / "ctx"
    (ctx_dir / "d").mkdir(parents=True)
    for n in range(30):
        (ctx_dir / "d" / f"f{n}").write_text("x")
    rootfs = tmp_path / "rootfs"
    (rootfs / "dst").mkdir(parents=True)
    ctx = BuildContext.open(ctx_dir)
    copy_into(rootfs, [SourceSpec.path(ctx, "d")], "/dst/")
    # Files written by the threads still replace what is there, the way one thread did.
    (ctx_dir / "d" / "f3").write_text("new")
    copy_into(rootfs, [SourceSpec.path(ctx, "d")], "/dst/")
    assert (rootfs / "dst" / "f3").read_text() == "new"
    (rootfs / "dst" / "f7").unlink()
    (rootfs / "dst" / "f7").mkdir()
    with pytest.raises(Exception, match="f7"):
        copy_into(rootfs, [SourceSpec.path(ctx, "d")], "/dst/")


def _copy_key(ctx: BuildContext, store: Store) -> tuple[dict[str, object], object]:
    matches = ctx.select(".")
    op = {"kind": "copy", "sources": ["."], "dest": "/app", "from": None, "excludes": [],
          "content": [str(ctx.checksum(matches, stat_cache=store.root / "statcache.json"))]}
    return op, step_key(base_key(manifest_digest="sha256:" + "1" * 64), op)


class _Stage:
    display_name = "stage-0"
    base = None
    instructions = ()


def test_a_build_remembers_the_files_its_copy_wrote_and_explains_later(tmp_path: Path) -> None:
    ctx_dir = tmp_path / "ctx"
    (ctx_dir / "app").mkdir(parents=True)
    (ctx_dir / "app" / "main.py").write_text("a\n")
    (ctx_dir / "app" / "util.py").write_text("b\n")
    store = Store(tmp_path / "store")
    ctx = BuildContext.open(ctx_dir)
    parent = base_key(manifest_digest="sha256:" + "1" * 64)

    op, key = _copy_key(ctx, store)
    quiet = Explainer(store, context=ctx, enabled=False)  # a build without --explain
    quiet.observe_step(_Stage(), "COPY . /app", parent, key, False)
    recorder = quiet.files_recorder(op)
    assert recorder is not None
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    copy_into(rootfs, [SourceSpec.path(ctx, ".")], "/app", observe=recorder)
    recorder.done()
    assert quiet.files_recorder(op) is None  # handed over once

    (ctx_dir / "app" / "main.py").write_text("changed\n")
    _, key2 = _copy_key(ctx, store)
    loud = Explainer(store, context=ctx, enabled=True)  # pybuild build --explain
    verdict = loud.observe_step(_Stage(), "COPY . /app", parent, key2, False)
    assert verdict.reasons == ("app/main.py changed",)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory another group needs root")
def test_files_under_a_setgid_directory_still_get_the_copy_owner(tmp_path: Path) -> None:
    ctx_dir = tmp_path / "ctx"
    (ctx_dir / "d" / "sub").mkdir(parents=True)
    for n in range(20):
        (ctx_dir / "d" / "sub" / f"f{n}").write_text("x")
    rootfs = tmp_path / "rootfs"
    (rootfs / "dst").mkdir(parents=True)
    os.chown(rootfs / "dst", 0, 1234)
    os.chmod(rootfs / "dst", 0o2775)  # new entries take group 1234
    copy_into(rootfs, [SourceSpec.path(BuildContext.open(ctx_dir), "d")], "/dst/")
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in (rootfs / "dst" / "sub").iterdir()}
    assert owners == {(0, 0)}
    assert (rootfs / "dst").stat().st_gid == 1234
