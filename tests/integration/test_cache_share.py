"""The cache shared between two "CI machines" (two empty stores) through a real registry or an
OCI layout: `--cache-to` on the first, `--cache-from` on the second, which then rebuilds with
every step cached, the same image digest, and only the layers it reuses downloaded."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.buildtools import pybuild, skopeo, write
from tests.fixtures.fault_proxy import FaultPlan

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")

# Two stages: `tools` makes a big layer the final image never holds; `app` copies one
# file out of it. An ARG makes the final RUN's key depend on the build.
DOCKERFILE = """\
FROM bb AS tools
RUN head -c 200000 /dev/urandom > /big && echo tool > /tool
FROM bb AS app
WORKDIR /app
COPY --from=tools /tool /app/tool
COPY main.txt /app/
ENV MODE=prod
RUN cat /app/main.txt /app/tool > /app/out
"""


def _build(tmp: Path, store: Path, ctx: Path, busybox: Path, *extra: str) -> dict[str, Any]:
    meta = tmp / f"meta-{len(list(tmp.glob('meta-*')))}.json"
    pybuild("build", "--root", str(store), "--progress", "plain", "--metadata-file", str(meta),
            "--build-context", f"bb=oci-layout://{busybox}:latest", *extra, str(ctx))
    return json.loads(meta.read_text())  # type: ignore[no-any-return]


def _layers(meta: dict[str, Any], stages: set[str] | None = None, *,
            store: Path | None = None) -> set[str]:
    """The steps' layers (plain tars in the store: digest = diff_id); with ``store``, the
    gzip blobs that store made of them to send them (docs/cache-keys.md, `layers/`)."""
    plain = {s["layer"] for s in meta["pybuild.steps"]
             if s["layer"] and (stages is None or s["stage"] in stages)}
    assert all(s["size"] > 0 for s in meta["pybuild.steps"] if s["layer"])
    if store is None:
        return plain
    sent = set()
    for digest in plain:
        forms = json.loads((store / "layers" / f"{digest[7:]}.json").read_text())
        sent.add(forms["application/vnd.oci.image.layer.v1.tar+gzip"]["digest"])
    return sent


def _blob_gets(log: list[tuple[str, str, str]]) -> list[str]:
    return [path.rsplit("/", 1)[1] for method, path, _ in log
            if method == "GET" and "/blobs/sha256:" in path]


def _project(tmp: Path) -> Path:
    return write(tmp / "ctx", {"Dockerfile": DOCKERFILE, "main.txt": "main\n"})


def test_registry_cache_two_machines(tmp_path: Path, local_busybox: Path, registry: Any,
                                     fault_proxy_factory: Any) -> None:
    ctx = _project(tmp_path)
    ref = f"{registry.host}/share/app:buildcache"
    first = _build(tmp_path, tmp_path / "ci-1", ctx, local_busybox,
                   "--cache-to", f"type=registry,ref={ref},mode=max")
    assert not any(s["cached"] for s in first["pybuild.steps"])

    # The second machine reads the registry through a proxy that logs every request.
    proxy = fault_proxy_factory(registry.host, FaultPlan(budget={}))
    second = _build(tmp_path, tmp_path / "ci-2", ctx, local_busybox,
                    "--cache-from", f"type=registry,ref={proxy.host}/share/app:buildcache")
    assert [s["cached"] for s in second["pybuild.steps"]] == [True] * len(first["pybuild.steps"])
    assert [s["key"] for s in second["pybuild.steps"]] == [s["key"] for s in first["pybuild.steps"]]
    assert second["containerimage.digest"] == first["containerimage.digest"]
    # One GET for the cache config, one per layer reused: no blob twice, nothing else.
    gets = _blob_gets(proxy.log)
    assert len(gets) == len(set(gets))
    sent = _layers(first, store=tmp_path / "ci-1")
    assert len(sent) == len(_layers(first)) and set(gets[1:]) == sent
    assert len(gets) == 1 + len(sent)

    # A third machine builds only the tools stage: the app stage's layers are not fetched.
    proxy.log.clear()
    third = _build(tmp_path, tmp_path / "ci-3", ctx, local_busybox,
                   "--cache-from", f"{proxy.host}/share/app:buildcache", "--target", "tools")
    assert all(s["cached"] for s in third["pybuild.steps"])
    assert set(_blob_gets(proxy.log)[1:]) == _layers(first, {"tools"}, store=tmp_path / "ci-1")
    blobs = {p.name for p in (tmp_path / "ci-3" / "blobs" / "sha256").iterdir()}
    assert not {d.split(":")[1] for d in _layers(first, {"app"}, store=tmp_path / "ci-1")} & blobs

    # skopeo, another client, copies the artifact into an OCI layout, which imports as well.
    copied = tmp_path / "copied"
    skopeo("copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{copied}:ci")
    fourth = _build(tmp_path, tmp_path / "ci-4", ctx, local_busybox,
                    "--cache-from", f"type=local,src={copied},tag=ci")
    assert all(s["cached"] for s in fourth["pybuild.steps"])
    assert fourth["containerimage.digest"] == first["containerimage.digest"]


def test_mode_min_exports_only_the_final_chain(tmp_path: Path, local_busybox: Path,
                                               registry: Any) -> None:
    ctx = _project(tmp_path)
    ref = f"{registry.host}/share/min:cache"
    first = _build(tmp_path, tmp_path / "ci-1", ctx, local_busybox, "--cache-to", ref)
    second = _build(tmp_path, tmp_path / "ci-2", ctx, local_busybox, "--cache-from", ref)
    cached = {s["instruction"]: s["cached"] for s in second["pybuild.steps"]}
    # mode=min: the tools stage ran again; the app stage's steps after the COPY --from
    # (whose key is the tools stage's, the same again) were reused.
    assert cached["RUN head -c 200000 /dev/urandom > /big && echo tool > /tool"] is False
    assert cached["RUN cat /app/main.txt /app/tool > /app/out"] is True
    assert second["containerimage.digest"] == first["containerimage.digest"]


def test_local_cache_two_machines(tmp_path: Path, local_busybox: Path) -> None:
    ctx = _project(tmp_path)
    cache = tmp_path / "cache-dir"
    first = _build(tmp_path, tmp_path / "ci-1", ctx, local_busybox,
                   "--cache-to", f"type=local,dest={cache},mode=max")
    index = json.loads((cache / "index.json").read_text())
    manifest = json.loads((cache / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    assert manifest["artifactType"] == "application/vnd.pybuild.cache.v1"
    assert manifest["config"]["mediaType"] == "application/vnd.pybuild.cache.config.v1+json"
    assert {d["digest"] for d in manifest["layers"]} == _layers(first, store=tmp_path / "ci-1")
    assert {d["mediaType"] for d in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+gzip"}

    (ctx / "main.txt").write_text("changed\n")
    second = _build(tmp_path, tmp_path / "ci-2", ctx, local_busybox,
                    "--cache-from", f"type=local,src={cache}")
    cached = [(s["instruction"], s["cached"]) for s in second["pybuild.steps"]]
    assert cached == [(s["instruction"], s["instruction"] not in
                       ("COPY main.txt /app/", "RUN cat /app/main.txt /app/tool > /app/out"))
                      for s in first["pybuild.steps"]]
    # The layers of the steps that changed were not copied into the second store.
    blobs = {p.name for p in (tmp_path / "ci-2" / "blobs" / "sha256").iterdir()}
    old = {s["layer"][7:] for s in first["pybuild.steps"] if s["layer"] and s["line"] >= 6}
    assert old and not old & blobs

    (ctx / "main.txt").write_text("main\n")
    third = _build(tmp_path, tmp_path / "ci-3", ctx, local_busybox,
                   "--cache-from", f"type=local,src={cache}")
    assert all(s["cached"] for s in third["pybuild.steps"])
    assert third["containerimage.digest"] == first["containerimage.digest"]


MOUNT_DOCKERFILE = """\
FROM bb
ARG RUNID
RUN --mount=type=cache,id=pkgs,target=/var/cache/pkgs \\
    echo "run $RUNID" >> /var/cache/pkgs/log && cp /var/cache/pkgs/log /log.txt
"""


def test_cache_mounts_travel(tmp_path: Path, local_busybox: Path, registry: Any) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": MOUNT_DOCKERFILE})
    ref = f"{registry.host}/share/mounts:cache"
    _build(tmp_path, tmp_path / "ci-1", ctx, local_busybox, "--build-arg", "RUNID=first",
           "--cache-to", f"type=registry,ref={ref},mounts=true")
    out = tmp_path / "out"
    _build(tmp_path, tmp_path / "ci-2", ctx, local_busybox, "--build-arg", "RUNID=second",
           "--cache-from", ref, "-o", f"type=local,dest={out}")
    assert (out / "log.txt").read_text() == "run first\nrun second\n"

    # Without mounts=true the mount stays on the first machine.
    ref2 = f"{registry.host}/share/mounts:nomounts"
    _build(tmp_path, tmp_path / "ci-3", ctx, local_busybox, "--build-arg", "RUNID=third",
           "--cache-to", ref2)
    out2 = tmp_path / "out2"
    _build(tmp_path, tmp_path / "ci-4", ctx, local_busybox, "--build-arg", "RUNID=fourth",
           "--cache-from", ref2, "-o", f"type=local,dest={out2}")
    assert (out2 / "log.txt").read_text() == "run fourth\n"


def test_missing_cache_source_is_a_warning(tmp_path: Path, local_busybox: Path,
                                           registry: Any) -> None:
    ctx = _project(tmp_path)
    meta = tmp_path / "meta.json"
    built = pybuild("build", "--root", str(tmp_path / "s"), "--progress", "plain",
                    "--metadata-file", str(meta),
                    "--build-context", f"bb=oci-layout://{local_busybox}:latest",
                    "--cache-from", f"{registry.host}/share/none:cache",
                    "--cache-from", f"type=local,src={tmp_path / 'nothing'}", str(ctx))
    assert f"cannot import cache from {registry.host}/share/none:cache" in built.stderr
    assert "nothing" in built.stderr
    bad = pybuild("build", "--cache-to", "type=s3,ref=x", str(ctx), check=False)
    assert bad.returncode == 2 and "type must be registry or local" in bad.stderr
