"""Registry mirrors, as BuildKit's buildkitd.toml and dockerd's daemon.json configure them: a
pull tries the mirrors in order, then the registry itself; the image keeps its own name. Real
docker-registry on loopback (tests/fixtures/registry.py) serves as mirror and registry."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.fixtures.buildtools import pybuild, write
from tests.fixtures.registry import file_layer, host_arch, write_image_layout

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")


@pytest.fixture(scope="module")
def mirrored(registry, busybox_image, tmp_path_factory):
    """busybox as docker.io's library/mbase:1 at the mirror's root and under hub/, and another
    image at other/busybox:1.36, to tell which place answered."""
    registry.push_layout(busybox_image.layout, busybox_image.tag, "library/mbase:1")
    registry.push_layout(busybox_image.layout, busybox_image.tag, "hub/library/mbase:1")
    layout = tmp_path_factory.mktemp("other") / "layout"
    write_image_layout(layout, "latest", [file_layer({"etc/from-other": b"other\n"})],
                       arch=host_arch(), cmd=["sh"])
    registry.push_layout(layout, "latest", "other/busybox:1.36")
    return registry


def _env(tmp_path: Path, toml: str | None = None, daemon: dict | None = None) -> dict[str, str]:
    env = {"PYBUILD_DAEMON_JSON": str(tmp_path / "daemon.json"), "PYBUILD_REGISTRY_MAX_BACKOFF": "0.05",
           "HOME": str(tmp_path / "home"), "CONTAINERS_REGISTRIES_CONF": str(tmp_path / "registries.conf")}
    if toml is not None:
        (tmp_path / "buildkitd.toml").write_text(toml)
        env["PYBUILD_BUILDKITD_CONFIG"] = str(tmp_path / "buildkitd.toml")
    if daemon is not None:
        (tmp_path / "daemon.json").write_text(json.dumps(daemon))
    return env


def test_docker_hub_images_come_from_the_buildkitd_mirror(mirrored, project: Path, store: str,
                                                         tmp_path: Path) -> None:
    env = _env(tmp_path, f'[registry."docker.io"]\nmirrors = ["{mirrored.host}"]\n')
    write(project, {"Dockerfile": "FROM mbase:1\nRUN echo hi > /hi\n"})
    out = tmp_path / "out"
    done = pybuild("build", "--root", store, "--progress", "plain", "-t", "app", "-o",
                   f"type=local,dest={out}", str(project), env=env)
    assert (out / "hi").read_text() == "hi\n" and (out / "bin/busybox").is_file()
    # the image keeps docker.io's name: only where it came from changed
    assert "load metadata for docker.io/library/mbase:1" in done.stderr
    assert "FROM docker.io/library/mbase:1" in done.stderr
    images = pybuild("images", "--root", store, env=env).stdout
    assert any(line.split()[:2] == ["mbase", "1"] for line in images.splitlines()), images
    # pybuild pull goes through the mirror too
    pulled = pybuild("pull", "--root", str(tmp_path / "s2"), "mbase:1", env=env)
    assert pulled.stdout.strip() == "mbase:1"


def test_daemon_json_mirror_with_a_path(mirrored, project: Path, store: str, tmp_path: Path) -> None:
    env = _env(tmp_path, daemon={"registry-mirrors": [f"http://{mirrored.host}/hub"]})
    write(project, {"Dockerfile": "FROM docker.io/library/mbase:1\nRUN test -x /bin/busybox\n"})
    pybuild("build", "--root", store, str(project), env=env)


def test_mirrors_are_tried_in_order_before_the_registry(mirrored, busybox_image, project: Path,
                                                       store: str, tmp_path: Path) -> None:
    host = mirrored.host
    write(project, {"Dockerfile": f"FROM {host}/busybox:1.36\n"})
    # the first mirror lacks the image; the second has one under that name: it wins
    env = _env(tmp_path, f'[registry."{host}"]\nmirrors = ["{host}/nothere", "{host}/other"]\n')
    out = tmp_path / "out1"
    pybuild("build", "--root", store, "-o", f"type=local,dest={out}", str(project), env=env)
    assert (out / "etc/from-other").read_text() == "other\n"
    # no mirror has it: the registry itself answers
    env = _env(tmp_path, f'[registry."{host}"]\nmirrors = ["{host}/nothere"]\n')
    out = tmp_path / "out2"
    pybuild("build", "--root", str(tmp_path / "s2"), "-o", f"type=local,dest={out}",
            str(project), env=env)
    assert (out / "bin/busybox").is_file() and not (out / "etc/from-other").exists()


def test_when_every_place_fails_the_error_names_each(mirrored, project: Path, store: str,
                                                    tmp_path: Path) -> None:
    env = _env(tmp_path, f'[registry."127.0.0.1:1"]\nmirrors = ["{mirrored.host}/nothere"]\n')
    write(project, {"Dockerfile": "FROM 127.0.0.1:1/app:1\n"})
    failed = pybuild("build", "--root", store, str(project), check=False, env=env)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "Dockerfile:1" in failed.stderr and "127.0.0.1:1" in failed.stderr
    assert f"mirror {mirrored.host}/nothere: " in failed.stderr


def test_a_broken_configuration_is_named_not_a_traceback(project: Path, store: str, tmp_path: Path,
                                                        busybox_image) -> None:
    env = _env(tmp_path, '[registry."docker.io"]\nmirrors = "x"\nhttp = 1\n')
    write(project, {"Dockerfile": f"FROM {busybox_image.ref}\n"})
    failed = pybuild("build", "--root", store, str(project), check=False, env=env)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert 'buildkitd.toml: [registry."docker.io"] http must be true or false' in failed.stderr


def test_cache_from_a_registry_goes_through_its_mirror(mirrored, busybox_image, project: Path,
                                                       tmp_path: Path) -> None:
    host = mirrored.host
    write(project, {"Dockerfile": f"FROM {busybox_image.ref}\nRUN echo built > /f\n"})
    pybuild("build", "--root", str(tmp_path / "s1"), "--cache-to",
            f"type=registry,ref={host}/proxy/team/app:cache,mode=max", str(project))
    # 127.0.0.1:1 answers nothing: the cache can only come from its mirror
    env = _env(tmp_path, f'[registry."127.0.0.1:1"]\nmirrors = ["{host}/proxy"]\n')
    meta = tmp_path / "meta.json"
    pybuild("build", "--root", str(tmp_path / "s2"), "--cache-from",
            "type=registry,ref=127.0.0.1:1/team/app:cache", "--metadata-file", str(meta),
            str(project), env=env)
    steps = json.loads(meta.read_text())["pybuild.steps"]
    assert [s["cached"] for s in steps] == [True]


def test_buildahs_registries_conf_mirror(mirrored, project: Path, store: str, tmp_path: Path) -> None:
    env = _env(tmp_path)
    (tmp_path / "registries.conf").write_text(
        '[[registry]]\nprefix = "docker.io/library"\nlocation = "docker.io/library"\n'
        f'[[registry.mirror]]\nlocation = "{mirrored.host}/hub/library"\n')
    write(project, {"Dockerfile": "FROM mbase:1\nRUN test -x /bin/busybox\n"})
    done = pybuild("build", "--root", store, "--progress", "plain", str(project), env=env)
    assert "FROM docker.io/library/mbase:1" in done.stderr
