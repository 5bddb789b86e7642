"""End-to-end builds from real base images in a real registry, checked with skopeo and umoci."""
from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.fixtures.buildtools import pybuild, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")


def skopeo_inspect(target: str, *, config: bool = False) -> dict:
    cmd = ["skopeo", "inspect", "--tls-verify=false"]
    if config:
        cmd += ["--config", "--raw"]
    out = subprocess.run([*cmd, target], capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def test_metadata_and_copy_build_matches_buildkit_config(project: Path, store: str, busybox_image,
                                                          tmp_path: Path) -> None:
    write(project, {
        "a.txt": "hi\n",
        "Dockerfile": (
            f"ARG BASE={busybox_image.ref}\n"
            "FROM $BASE\n"
            "ARG VERSION=1\n"
            'ENV A=b C="d e"\n'
            "LABEL x=y\n"
            "WORKDIR /app\n"
            "COPY a.txt .\n"
            "EXPOSE 80 7000-7001/udp\n"
            "USER nobody\n"
            "CMD echo hello\n"
            'ENTRYPOINT ["/bin/sh"]\n'
            "VOLUME /data\n"
            "STOPSIGNAL SIGTERM\n"
            "HEALTHCHECK --interval=5s CMD true\n"
            "ONBUILD RUN echo x\n"
            'SHELL ["/bin/sh", "-ec"]\n'),
    })
    oci = tmp_path / "out.oci.tar"
    docker = tmp_path / "out.docker.tar"
    pybuild("build", "--root", store, "--build-arg", "VERSION=2", "-t", "example/app:v1",
            "-o", f"type=oci,dest={oci}", "-o", f"type=docker,dest={docker}",
            "--iidfile", str(tmp_path / "iid"), "--metadata-file", str(tmp_path / "meta.json"),
            str(project))
    cfg = skopeo_inspect(f"oci-archive:{oci}", config=True)
    assert cfg["config"]["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                    "A=b", "C=d e"]
    assert cfg["config"]["ExposedPorts"] == {"80/tcp": {}, "7000/udp": {}, "7001/udp": {}}
    # the CMD of this stage survives the ENTRYPOINT after it (only an inherited one is reset)
    assert cfg["config"]["Cmd"] == ["/bin/sh", "-c", "echo hello"]
    assert cfg["config"]["Entrypoint"] == ["/bin/sh"]
    assert cfg["config"]["WorkingDir"] == "/app"
    assert cfg["config"]["User"] == "nobody"
    assert cfg["config"]["Labels"] == {"x": "y"}
    assert cfg["config"]["Volumes"] == {"/data": {}}
    assert cfg["config"]["StopSignal"] == "SIGTERM"
    assert cfg["config"]["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5000000000}
    assert cfg["config"]["OnBuild"] == ["RUN echo x"]
    assert cfg["config"]["Shell"] == ["/bin/sh", "-ec"]
    created_by = [h.get("created_by") for h in cfg["history"]][1:]
    assert created_by == [
        "ARG VERSION=2",
        "ENV A=b C=d e",
        "LABEL x=y",
        "WORKDIR /app",
        "COPY a.txt . # buildkit",
        "EXPOSE [7000/udp 7001/udp 80/tcp]",
        "USER nobody",
        'CMD ["/bin/sh" "-c" "echo hello"]',
        'ENTRYPOINT ["/bin/sh"]',
        "VOLUME [/data]",
        "STOPSIGNAL SIGTERM",
        "HEALTHCHECK {Test:[CMD-SHELL true] Interval:5s Timeout:0s StartPeriod:0s "
        "StartInterval:0s Retries:0}",
        "SHELL [/bin/sh -ec]",
    ]
    empty = [h.get("empty_layer", False) for h in cfg["history"]]
    assert len(cfg["rootfs"]["diff_ids"]) == empty.count(False)
    iid = (tmp_path / "iid").read_text()
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["containerimage.config.digest"] == iid
    assert meta["image.name"] == "example/app:v1"
    # both archives are accepted by skopeo and describe the same config
    dcfg = skopeo_inspect(f"docker-archive:{docker}", config=True)
    assert dcfg["config"] == cfg["config"]
    # umoci unpacks the OCI layout: the copied file is there
    layout = tmp_path / "layout"
    subprocess.run(["skopeo", "copy", f"oci-archive:{oci}", f"oci:{layout}:v1"], check=True,
                   capture_output=True, timeout=120)
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:v1", str(bundle)], check=True,
                   capture_output=True, timeout=120)
    assert (bundle / "rootfs/app/a.txt").read_text() == "hi\n"
    assert (bundle / "rootfs/bin/busybox").exists()


def _oci_config(archive: Path) -> dict:
    return skopeo_inspect(f"oci-archive:{archive}", config=True)


def _last_layer_names(archive: Path) -> list[str]:
    with tarfile.open(archive) as oci:
        def blob(digest: str) -> bytes:
            member = oci.extractfile("blobs/" + digest.replace(":", "/"))
            assert member is not None
            return member.read()
        index = json.loads(oci.extractfile("index.json").read())  # type: ignore[union-attr]
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        with tarfile.open(fileobj=io.BytesIO(blob(manifest["layers"][-1]["digest"]))) as layer:
            return sorted(m.name.strip("/") for m in layer)


def _rootfs(archive: Path, tmp: Path) -> Path:
    layout = tmp / "layout-x"
    subprocess.run(["skopeo", "copy", f"oci-archive:{archive}", f"oci:{layout}:x"], check=True,
                   capture_output=True, timeout=120)
    bundle = tmp / "bundle-x"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:x", str(bundle)], check=True,
                   capture_output=True, timeout=120)
    return bundle / "rootfs"


def test_run_steps_multistage_and_cached_rebuild(project: Path, store: str, busybox_image,
                                                 tmp_path: Path) -> None:
    write(project, {
        "src/main.txt": "main\n",
        "Dockerfile": (
            f"FROM {busybox_image.ref} AS build\n"
            "WORKDIR /work\n"
            "COPY src/ ./\n"
            "RUN echo built > out.txt && cat main.txt >> out.txt && rm -f /etc/group\n"
            f"FROM {busybox_image.ref} AS broken\n"
            "RUN exit 7\n"
            f"FROM {busybox_image.ref}\n"
            "COPY --from=build /work/out.txt /out.txt\n"
            "RUN true\n"),
    })
    out = tmp_path / "a.tar"
    first = pybuild("build", "--root", store, "--progress", "plain", "-o", f"type=oci,dest={out}",
                    "--metadata-file", str(tmp_path / "m1.json"), str(project))
    # the broken stage is not needed by the target and is never run
    assert "exit 7" not in first.stderr
    root = _rootfs(out, tmp_path)
    assert (root / "out.txt").read_text() == "built\nmain\n"
    cfg = _oci_config(out)
    hist = [h["created_by"] for h in cfg["history"] if "buildkit" in h.get("comment", "")]
    assert hist == ["COPY /work/out.txt /out.txt # buildkit", "RUN /bin/sh -c true # buildkit"]
    # RUN true has a layer, as in BuildKit. It holds only the runtime's mount points, which
    # this busybox image lacks and BuildKit leaves behind (test_run_step has the empty tar).
    assert "empty_layer" not in cfg["history"][-1]
    assert _last_layer_names(out) == ["dev", "proc", "sys"]
    m1 = json.loads((tmp_path / "m1.json").read_text())
    assert not any(s["cached"] for s in m1["pybuild.steps"])

    out2 = tmp_path / "b.tar"
    pybuild("build", "--root", store, "-o", f"type=oci,dest={out2}",
            "--metadata-file", str(tmp_path / "m2.json"), str(project))
    m2 = json.loads((tmp_path / "m2.json").read_text())
    assert all(s["cached"] for s in m2["pybuild.steps"])
    assert m2["containerimage.digest"] == m1["containerimage.digest"]

    # a change re-runs the steps from the first changed key on, in that chain only
    (project / "src/main.txt").write_text("changed\n")
    pybuild("build", "--root", store, "-o", f"type=oci,dest={out2}",
            "--metadata-file", str(tmp_path / "m3.json"), str(project))
    m3 = json.loads((tmp_path / "m3.json").read_text())
    ran = [s["instruction"] for s in m3["pybuild.steps"] if not s["cached"]]
    assert ran == ["COPY src/ ./", "RUN echo built > out.txt && cat main.txt >> out.txt && rm -f /etc/group",
                   "COPY --from=build /work/out.txt /out.txt", "RUN true"]
    (tmp_path / "x").mkdir()
    assert (_rootfs(out2, tmp_path / "x") / "out.txt").read_text() == "built\nchanged\n"


def test_target_builds_only_what_it_needs(project: Path, store: str, busybox_image, tmp_path: Path) -> None:
    write(project, {"Dockerfile": (
        f"FROM {busybox_image.ref} AS one\nRUN echo one > /one\n"
        "FROM one AS two\nRUN exit 3\n"
        f"FROM {busybox_image.ref} AS three\nCOPY --from=one /one /copied\n")})
    out = tmp_path / "t.tar"
    pybuild("build", "--root", store, "--target", "three", "-o", f"type=tar,dest={out}", str(project))
    with tarfile.open(out) as tar:
        assert tar.extractfile("copied").read() == b"one\n"
    failed = pybuild("build", "--root", store, "--target", "two", str(project), check=False)
    assert failed.returncode == 1
    assert "Dockerfile:4: RUN exit 3 failed: exit code 3" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_missing_source_names_line_and_dockerignore_rule(project: Path, store: str) -> None:
    write(project, {"keep.txt": "k", "secret.key": "s", ".dockerignore": "# comment\n*.key\n",
                    "Dockerfile": "FROM scratch\nCOPY keep.txt /\nCOPY secret.key /\n"})
    failed = pybuild("build", "--root", store, str(project), check=False)
    assert failed.returncode == 1
    assert failed.stderr.count("Traceback") == 0
    assert 'Dockerfile:3: COPY failed: "secret.key" not found in build context' in failed.stderr
    assert "*.key" in failed.stderr
