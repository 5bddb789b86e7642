"""Reproducible builds (issue 5): with SOURCE_DATE_EPOCH, two --no-cache builds of the same
inputs in different folders, at different times, with different stores, give the same image
byte for byte; `pybuild build --check-reproducible` says so, or names the first difference.

The base is the busybox image of the test registry (each store pulls it); the archives are
read with tarfile/json (tests/integration/runbuild.py), independently of builder.oci."""
from __future__ import annotations

import io
import json
import os
import re
import tarfile
import time
from pathlib import Path

import pytest

from tests.integration.runbuild import OciImage, pybuild

EPOCH = 1_700_000_000
EPOCH_TEXT = "2023-11-14T22:13:20Z"

DOCKERFILE = """\
FROM {base} AS build
WORKDIR /work/deep
COPY a.txt sub ./
RUN mkdir -p /out/x/y && echo built > /out/x/y/file && cp a.txt /out/
FROM {base}
WORKDIR /app/nested
COPY --from=build /out /opt/out/
ADD pkg.tar /opt/
COPY sub /app/s/t/
RUN echo run > /app/r.txt && mkdir -p /var/lib/z && touch /var/lib/z/f
ENV A=1
CMD ["sh"]
"""


def _pkg_tar(mtime: float) -> bytes:
    """A local tar for ADD whose entries carry ``mtime`` (one folder's differs from the other's)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind in (("pkg", tarfile.DIRTYPE), ("pkg/lib", tarfile.DIRTYPE),
                           ("pkg/lib/x", tarfile.REGTYPE), ("pkg/old", tarfile.REGTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = kind, 0o755 if kind == tarfile.DIRTYPE else 0o644, mtime
            data = b"x\n" if kind == tarfile.REGTYPE else b""
            if name == "pkg/old":
                info.mtime = 1_000_000  # older than the epoch: kept as it is
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _context(folder: Path, base: str, stamp: float) -> Path:
    """The same inputs in another folder, with other file times (``stamp``)."""
    (folder / "sub").mkdir(parents=True)
    (folder / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    (folder / "a.txt").write_text("hello\n")
    (folder / "sub" / "b.txt").write_text("sub\n")
    (folder / "pkg.tar").write_bytes(_pkg_tar(stamp))
    for path in folder.rglob("*"):
        os.utime(path, (stamp, stamp))
    return folder


def _build(ctx: Path, store: Path, out: Path, *args: str, env: dict[str, str] | None = None) -> OciImage:
    pybuild("build", "--root", str(store), "--progress", "plain", "--no-cache",
            "-o", f"type=oci,dest={out}", *args, str(ctx), env=env)
    return OciImage(out)


@pytest.fixture(scope="module")
def two_builds(busybox_image, tmp_path_factory: pytest.TempPathFactory) -> tuple[OciImage, OciImage]:
    one = tmp_path_factory.mktemp("repro-one")
    two = tmp_path_factory.mktemp("repro-two")
    first = _build(_context(one / "ctx", busybox_image.ref, time.time()), one / "store",
                   one / "out.tar", env={"SOURCE_DATE_EPOCH": str(EPOCH)})
    time.sleep(1.1)  # every file a step writes now has another mtime second
    second = _build(_context(two / "elsewhere" / "ctx", busybox_image.ref, time.time() - 86400),
                    two / "other-store", two / "out.tar", "--source-date-epoch", str(EPOCH),
                    env={"SOURCE_DATE_EPOCH": ""})
    return first, second


def test_two_no_cache_builds_give_the_same_bytes(two_builds: tuple[OciImage, OciImage]) -> None:
    first, second = two_builds
    assert first.config == second.config
    assert first.layer_digests == second.layer_digests
    # index.json names the manifest by digest: equal, so the image digest is the same
    assert _index(first.archive) == _index(second.archive)
    assert first.archive.read_bytes() == second.archive.read_bytes()


def _index(archive: Path) -> bytes:
    with tarfile.open(archive) as tar:
        return tar.extractfile("index.json").read()  # type: ignore[union-attr]


def test_times_are_the_epoch_and_the_base_is_untouched(busybox_image,
                                                       two_builds: tuple[OciImage, OciImage]) -> None:
    image = two_builds[0]
    assert image.config["created"] == EPOCH_TEXT
    history = image.history
    assert history[0]["created"] == "2024-01-01T00:00:00Z"  # the base's entry, as it was
    assert {h["created"] for h in history[1:]} == {EPOCH_TEXT}
    assert image.layer_digests[0] == busybox_image.layer_digests[0]  # base blob as pulled
    seen = 0
    for n in range(1, len(image.layer_digests)):
        for name, (info, _) in image.layer(n).items():
            seen += 1
            want = 1_000_000 if name == "opt/pkg/old" else EPOCH
            assert info.mtime == want, (n, name, info.mtime)
    assert seen >= 15  # WORKDIR parents, COPY --from tree, ADD's tar, COPY parents, RUN's files
    names = set().union(*(image.layer(n) for n in range(1, len(image.layer_digests))))
    assert {"app/nested", "opt/out/x/y/file", "opt/pkg/lib/x", "app/s/t/b.txt",
            "var/lib/z/f", "app/r.txt"} <= names


def _check(ctx: Path, *args: str, env: dict[str, str] | None = None):
    return pybuild("build", "--check-reproducible", "--progress", "quiet", *args, str(ctx),
                   check=False, env=env)


def test_check_reproducible_equal(busybox_image, tmp_path: Path) -> None:
    ctx = _context(tmp_path / "ctx", busybox_image.ref, time.time())
    proc = _check(ctx, "--source-date-epoch", str(EPOCH))
    assert proc.returncode == 0, proc.stderr
    digests = re.findall(r"sha256:[0-9a-f]{64}", proc.stdout)
    assert len(digests) == 2 and digests[0] == digests[1], proc.stdout
    assert "reproducible" in proc.stdout


def test_check_reproducible_names_the_first_difference(busybox_image, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image.ref}\nRUN echo same > /same\n"
                                    "RUN mkdir /stamp && date +%s%N > /stamp/now && "
                                    "head -c 16 /dev/urandom | od -An -tx1 >> /stamp/now\n")
    proc = _check(ctx, env={"SOURCE_DATE_EPOCH": ""})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "SOURCE_DATE_EPOCH" in out  # says which epoch it chose
    # the RUN layer (2nd new layer, layer 2 counting the base's as 0), the file, and how
    # (busybox's date may print whole seconds only: two quick builds can agree on it)
    assert re.search(r"layer 2\b.*date \+%s%N", out), out
    assert "stamp/now" in out and "content" in out, out
    assert "/same" not in out.split("layer 2")[1]


def test_a_cached_rebuild_remakes_nothing_and_survives_lost_blobs(busybox_image, tmp_path: Path) -> None:
    """A fully cached rebuild reuses the image made last time (builder.export remembers it),
    gives the same bytes, and makes the image again when one of its blobs has gone."""
    ctx = _context(tmp_path / "ctx", busybox_image.ref, time.time())
    store = tmp_path / "store"

    def build(out: str) -> bytes:
        pybuild("build", "--root", str(store), "--progress", "plain", "--source-date-epoch",
                str(EPOCH), "-o", f"type=oci,dest={tmp_path / out}", str(ctx))
        return (tmp_path / out).read_bytes()

    first = build("1.tar")
    assert build("2.tar") == first
    manifest = json.loads(_index(tmp_path / "1.tar"))["manifests"][0]["digest"]
    (store / "blobs" / "sha256" / manifest.split(":")[1]).unlink()  # as a prune could
    assert build("3.tar") == first
    assert (store / "blobs" / "sha256" / manifest.split(":")[1]).is_file()  # made again


def test_check_reproducible_refuses_what_it_cannot_keep_or_read_twice(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    tagged = _check(tmp_path, "-t", "app:1")
    assert tagged.returncode == 2 and "keeps nothing" in tagged.stderr
    piped = pybuild("build", "--check-reproducible", "-f", "-", str(tmp_path), check=False)
    assert piped.returncode == 2 and "stdin" in piped.stderr
