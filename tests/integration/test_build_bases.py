"""Where FROM and COPY --from get their images: a registry (tags, digests, multi-arch indexes,
basic auth from DOCKER_CONFIG, --insecure-registry, verified blobs), or, air-gapped, named
build contexts (oci-layout://, docker-image://, folders) and the local store."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.auth_registry import docker_config
from tests.fixtures.buildtools import oci_config, pybuild, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")


def test_from_tag_digest_and_multiarch_index(project: Path, store: str, busybox_image,
                                             multiarch_image, tmp_path: Path) -> None:
    host, _, _ = busybox_image.ref.partition("/")
    write(project, {"Dockerfile": (
        f"FROM {busybox_image.ref}@{busybox_image.digest} AS pinned\n"
        "RUN echo pinned > /p\n"
        f"FROM {host}/busybox@{busybox_image.digest} AS digest_only\n"
        "RUN echo digest > /d\n"
        f"FROM {multiarch_image.ref}\n"
        "COPY --from=pinned /p /p\n"
        "COPY --from=digest_only /d /d\n")})
    out = tmp_path / "out"
    pybuild("build", "--root", store, "-o", f"type=local,dest={out}", str(project))
    assert (out / "p").read_text() == "pinned\n" and (out / "d").read_text() == "digest\n"
    # the index resolved to this host's image, not the other platform's
    assert (out / "bin/busybox").is_file() and not (out / "etc/fake-arch").exists()

    # a digest that does not exist is an error naming the image
    wrong = "sha256:" + "0" * 64
    write(project, {"Dockerfile": f"FROM {busybox_image.ref}@{wrong}\n"})
    failed = pybuild("build", "--root", store, str(project), check=False)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert "Dockerfile:1" in failed.stderr and wrong in failed.stderr


def test_basic_auth_from_docker_config_and_insecure_registry(project: Path, store: str,
                                                             auth_registry, tmp_path: Path) -> None:
    write(project, {"Dockerfile": f"FROM {auth_registry.image}\nRUN test -x /bin/busybox\n"})
    good = docker_config(tmp_path / "good", auth_registry.host, auth_registry.user,
                         auth_registry.password)
    bad = docker_config(tmp_path / "bad", auth_registry.host, auth_registry.user, "wrong")

    # not loopback: HTTPS unless named insecure, and the error says how to fix it
    failed = pybuild("build", "--root", store, str(project), check=False,
                     env={"DOCKER_CONFIG": str(good)})
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert "--insecure-registry" in failed.stderr or "insecure" in failed.stderr

    failed = pybuild("build", "--root", store, "--insecure-registry", auth_registry.host,
                     str(project), check=False, env={"DOCKER_CONFIG": str(bad)})
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert "401" in failed.stderr or "unauthorized" in failed.stderr.lower()

    pybuild("build", "--root", store, "--insecure-registry", auth_registry.host, str(project),
            env={"DOCKER_CONFIG": str(good)})


def test_corrupt_blob_is_refused_and_not_kept(project: Path, store: str, registry,
                                              tmp_path: Path) -> None:
    from tests.fixtures.registry import file_layer, host_arch, write_image_layout

    layout = tmp_path / "layout"
    _, layers, _ = write_image_layout(layout, "bad", [file_layer({"hello": b"corrupt me\n" * 100})],
                                      arch=host_arch(), cmd=["/hello"])
    registry.push_layout(layout, "bad", "corrupt/image:1")
    data = registry.blob_data_path(layers[0])
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # same size, other bytes
    data.write_bytes(bytes(blob))

    write(project, {"Dockerfile": f"FROM {registry.host}/corrupt/image:1\n"})
    failed = pybuild("build", "--root", store, str(project), check=False)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert layers[0] in failed.stderr
    assert "digest" in failed.stderr.lower()
    stored = Path(store) / "blobs/sha256"
    assert not (stored / layers[0].split(":")[1]).exists()
    assert not [p for p in stored.iterdir() if p.name.startswith(".")]  # no partial download


def test_named_contexts_for_from_and_copy_from(project: Path, store: str, busybox_image,
                                               local_busybox: Path, tmp_path: Path) -> None:
    folder = write(tmp_path / "folder", {"tool.txt": "from a folder\n", "sub/x": "x\n"})
    write(project, {"Dockerfile": (
        "FROM img AS from_image\n"
        "RUN echo img > /img.txt\n"
        "FROM layout\n"
        "COPY --from=folder /tool.txt /sub/ /f/\n"
        "COPY --from=img /bin/busybox /copied-busybox\n"
        "COPY --from=from_image /img.txt /\n"
        "COPY --from=alt /etc/passwd /alt-passwd\n")})
    out, oci = tmp_path / "out", tmp_path / "oci.tar"
    pybuild("build", "--root", store,
            "--build-context", f"layout=oci-layout://{local_busybox}:latest",
            "--build-context", f"img=docker-image://{busybox_image.ref}",
            "--build-context", f"alt=oci-layout://{local_busybox}",
            "--build-context", f"folder={folder}",
            "-o", f"type=local,dest={out}", "-o", f"type=oci,dest={oci}", str(project))
    assert (out / "f/tool.txt").read_text() == "from a folder\n" and (out / "f/x").read_text() == "x\n"
    assert (out / "copied-busybox").stat().st_size == Path("/bin/busybox").stat().st_size
    assert (out / "img.txt").read_text() == "img\n"
    assert "nobody" in (out / "alt-passwd").read_text()
    # the named context's config is the base's (busybox's Cmd)
    assert oci_config(f"oci-archive:{oci}")["config"]["Cmd"] == ["sh"]

    # a folder as FROM: its files are the root filesystem
    write(project, {"Dockerfile": "FROM folder\nCOPY --from=folder tool.txt /again.txt\n"})
    out2 = tmp_path / "out2"
    pybuild("build", "--root", store, "--build-context", f"folder={folder}",
            "-o", f"type=local,dest={out2}", str(project))
    assert (out2 / "tool.txt").read_text() == (out2 / "again.txt").read_text() == "from a folder\n"

    # a missing layout or folder is a usage error, not a traceback
    failed = pybuild("build", "--root", store, "--build-context", f"layout=oci-layout://{tmp_path}/no",
                     str(project), check=False)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr and "no" in failed.stderr


class _CountingProxy:
    """A TCP listener that counts connections: where HTTP(S)_PROXY points, any request would
    arrive here first."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.count = 0
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.count += 1
            conn.close()


@pytest.fixture()
def counting_proxy() -> Iterator[_CountingProxy]:
    proxy = _CountingProxy()
    yield proxy
    proxy.sock.close()


def test_local_bases_make_no_network_request(project: Path, store: str, local_busybox: Path,
                                             counting_proxy: _CountingProxy, tmp_path: Path) -> None:
    folder = write(tmp_path / "folder", {"f.txt": "f\n"})
    proxy_env = {k: counting_proxy.url for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                                                 "http_proxy", "https_proxy", "all_proxy")}
    proxy_env.update(NO_PROXY="", no_proxy="")
    contexts = ["--build-context", f"base=oci-layout://{local_busybox}",
                "--build-context", f"folder={folder}"]
    # first: an image built into the local store under a docker.io-looking name
    write(project, {"Dockerfile": "FROM base\nRUN echo one > /one\n"})
    pybuild("build", "--root", store, *contexts, "-t", "busybox:local", str(project), env=proxy_env)
    # then FROM that name, a layout, a folder and scratch: nothing needs the network
    write(project, {"Dockerfile": (
        "FROM busybox:local AS stored\n"
        "RUN cat /one > /two\n"
        "FROM scratch AS empty\n"
        "COPY --from=folder f.txt /\n"
        "FROM base\n"
        "COPY --from=stored /two /two\n"
        "COPY --from=empty /f.txt /f.txt\n")})
    out = tmp_path / "out"
    pybuild("build", "--root", store, *contexts, "-o", f"type=local,dest={out}", str(project),
            env=proxy_env)
    assert (out / "two").read_text() == "one\n" and (out / "f.txt").read_text() == "f\n"
    assert counting_proxy.count == 0
    # and in a network namespace with no network at all, the same build still works
    if shutil.which("unshare"):
        cmd = ["unshare", "--net", "python3", "-m", "builder", "build", "--root", store, *contexts,
               "--no-cache", "-o", f"type=local,dest={tmp_path / 'out2'}", str(project)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
    # a sanity check that the proxy does see what goes to the network
    write(project, {"Dockerfile": "FROM example.invalid/never:1\n"})
    failed = pybuild("build", "--root", store, str(project), env=proxy_env, check=False)
    assert failed.returncode != 0 and counting_proxy.count > 0


def test_docker_image_scratch_is_the_empty_image(project: Path, store: str, tmp_path: Path,
                                                counting_proxy: _CountingProxy) -> None:
    """dockerui reads `docker-image://scratch` as the empty image: a stage on it is the same
    image as one `FROM scratch`, with no request to any registry and no step for the base;
    COPY --from it finds nothing."""
    env = {"SOURCE_DATE_EPOCH": "0", "HTTP_PROXY": counting_proxy.url, "HTTPS_PROXY": counting_proxy.url,
           "NO_PROXY": "", "no_proxy": ""}
    write(project, {"a.txt": "a\n", "Dockerfile": "FROM scratch\nCOPY a.txt /\n",
                    "Named.Dockerfile": "FROM base\nCOPY a.txt /\n",
                    "From.Dockerfile": "FROM scratch\nCOPY --from=base /x /\n"})
    ids = []
    for args in ([], ["-f", str(project / "Named.Dockerfile"), "--build-context", "base=docker-image://scratch"]):
        iid = tmp_path / f"iid{len(ids)}"
        done = pybuild("build", "--root", store, "--iidfile", str(iid), *args, str(project), env=env)
        assert "FROM base" not in done.stderr
        ids.append(iid.read_text())
    assert ids[0] == ids[1]
    assert counting_proxy.count == 0
    failed = pybuild("build", "--root", store, "-f", str(project / "From.Dockerfile"),
                     "--build-context", "base=docker-image://scratch", str(project), env=env, check=False)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert 'COPY failed: "/x" not found in image base' in failed.stderr
