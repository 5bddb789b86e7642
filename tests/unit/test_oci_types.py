"""builder.oci.types: round trips, docker's field order and omitempty, clear errors on garbage."""
from __future__ import annotations

import json

import pytest

from builder.digest import Digest, sha256_bytes
from builder.errors import RegistryError
from builder.oci import types as t
from builder.oci.types import (
    Descriptor,
    ImageConfig,
    ImageFormatError,
    Index,
    Manifest,
    MediaType,
    Platform,
    parse_manifest_or_index,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64

# A docker-hub style config written by the classic builder: unknown fields everywhere.
DOCKER_CONFIG = {
    "architecture": "amd64",
    "config": {"Hostname": "", "User": "nobody", "Env": ["PATH=/bin"], "Cmd": ["sh"],
               "ExposedPorts": {"80/tcp": {}}, "Image": "sha256:abc", "Volumes": {"/data": {}},
               "Healthcheck": {"Test": ["CMD", "true"], "Interval": 30000000000, "Retries": 3},
               "OnBuild": None, "Labels": {"a": "b"}},
    "container": "0123", "created": "2023-05-19T20:19:24.582337226Z", "docker_version": "20.10.23",
    "history": [{"created": "2023-05-19T20:19:24Z", "created_by": "/bin/sh -c #(nop) ADD file"},
                {"created": "2023-05-19T20:19:24Z", "created_by": "CMD [\"sh\"]", "empty_layer": True}],
    "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": [D1]},
}


def test_image_config_round_trip_keeps_unknown_fields_and_sorts_top_level():
    cfg = ImageConfig.from_json(DOCKER_CONFIG)
    assert cfg.config.user == "nobody"
    assert cfg.config.exposed_ports == ("80/tcp",)
    assert cfg.config.healthcheck == t.Healthcheck(("CMD", "true"), interval=30_000_000_000, retries=3)
    assert cfg.history[1].empty_layer
    assert cfg.diff_ids == (Digest.parse(D1),)
    out = cfg.to_json()
    assert list(out) == sorted(out)
    assert out["docker_version"] == "20.10.23" and out["config"]["Image"] == "sha256:abc"
    # OnBuild null is omitted (omitempty), everything else is the same value.
    expected = json.loads(json.dumps(DOCKER_CONFIG))
    del expected["config"]["OnBuild"]
    assert out == expected
    assert ImageConfig.from_bytes(cfg.to_bytes()).to_bytes() == cfg.to_bytes()


def test_container_config_field_order_is_the_go_struct_order():
    cfg = t.ContainerConfig(user="u", env=("A=1",), entrypoint=("/e",), cmd=("c",),
                            working_dir="/w", labels={"l": "v"}, stop_signal="SIGTERM",
                            args_escaped=True, shell=("/bin/sh", "-c"), on_build=("RUN x",))
    assert list(cfg.to_json()) == ["User", "Env", "Entrypoint", "Cmd", "WorkingDir", "Labels",
                                   "StopSignal", "ArgsEscaped", "OnBuild", "Shell"]


def test_cmd_null_and_empty_differ_when_read():
    assert t.ContainerConfig.from_json({"Cmd": None}).cmd is None
    assert t.ContainerConfig.from_json({"Cmd": []}).cmd == ()


def test_bytes_are_compact_and_stable():
    cfg = ImageConfig("amd64", "linux", diff_ids=(Digest.parse(D1),))
    data = cfg.to_bytes()
    assert data == (b'{"architecture":"amd64","config":{},"os":"linux",'
                    b'"rootfs":{"type":"layers","diff_ids":["' + D1.encode() + b'"]}}')
    assert cfg.digest == sha256_bytes(data)


@pytest.mark.parametrize("obj, message", [
    ({"os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}, "missing required field 'architecture'"),
    ({"architecture": "amd64", "os": "linux"}, "missing required field 'rootfs'"),
    ({"architecture": "amd64", "os": "linux", "rootfs": {"type": "tar", "diff_ids": []}},
     "rootfs.type is 'tar'"),
    ({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": ["nope"]}},
     "rootfs.diff_ids[0] is not a digest"),
    ({"architecture": 5, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}},
     "'architecture' must be a string"),
    ({"architecture": "amd64", "os": "linux", "config": {"Env": "A=1"},
      "rootfs": {"type": "layers", "diff_ids": []}}, "'Env' must be an array"),
])
def test_config_garbage_is_a_registry_error_naming_the_field(obj, message):
    with pytest.raises(RegistryError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ImageConfig.from_json(obj)


def _manifest_json(media=MediaType.OCI_MANIFEST):
    return {"schemaVersion": 2, "mediaType": media,
            "config": {"mediaType": MediaType.OCI_CONFIG, "digest": D1, "size": 10},
            "layers": [{"mediaType": MediaType.OCI_LAYER_GZIP, "digest": D2, "size": 20,
                        "annotations": {"x": "y"}, "data": "e30="}],
            "annotations": {"org.opencontainers.image.created": "now"},
            "subject": {"mediaType": MediaType.OCI_MANIFEST, "digest": D1, "size": 1}}


def test_manifest_round_trip_keeps_order_and_unknown_fields():
    obj = _manifest_json()
    data = json.dumps(obj, separators=(",", ":")).encode()
    m = parse_manifest_or_index(data)
    assert isinstance(m, Manifest)
    assert m.layers[0].annotations == {"x": "y"} and m.layers[0].extra == {"data": "e30="}
    assert t.encode(m.to_json()) == data


def test_docker_manifest_list_selects_host_platform_and_lists_others():
    mk = lambda arch, variant="": {
        "mediaType": MediaType.DOCKER_MANIFEST, "digest": D1 if arch == "amd64" else D2, "size": 5,
        "platform": {"architecture": arch, "os": "linux", **({"variant": variant} if variant else {})}}
    obj = {"schemaVersion": 2, "mediaType": MediaType.DOCKER_MANIFEST_LIST,
           "manifests": [mk("amd64"), mk("arm64", "v8"), mk("arm", "v6")]}
    idx = parse_manifest_or_index(json.dumps(obj).encode())
    assert isinstance(idx, Index)
    assert str(idx.select(Platform("linux", "amd64")).digest) == D1
    assert str(idx.select(Platform("linux", "arm64")).digest) == D2  # v8 is arm64's default
    assert idx.select(Platform("linux", "arm", "v7")).platform == Platform("linux", "arm", "v6")
    with pytest.raises(ImageFormatError) as err:
        idx.select(Platform("linux", "s390x"))
    assert "no manifest for platform linux/s390x" in str(err.value)
    assert "available: linux/amd64, linux/arm/v6, linux/arm64/v8" in str(err.value)


@pytest.mark.parametrize("data, message", [
    (b"\x00garbage", "not valid JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"schemaVersion": 1, "fsLayers": []}', "schema 1 manifests are not supported"),
    (b'{"schemaVersion": 2, "mediaType": "text/plain"}', "unsupported manifest media type"),
    (json.dumps({"schemaVersion": 2, "mediaType": MediaType.OCI_MANIFEST,
                 "config": {"mediaType": "x", "digest": D1}, "layers": []}).encode(),
     "config: missing required field 'size'"),
    (json.dumps({"schemaVersion": 2, "mediaType": MediaType.OCI_MANIFEST,
                 "config": {"mediaType": "x", "digest": D1, "size": 1}, "layers": {}}).encode(),
     "'layers' must be an array"),
])
def test_manifest_garbage(data, message):
    with pytest.raises(ImageFormatError, match=message):
        parse_manifest_or_index(data)


def test_descriptor_omits_empty_fields_and_platform_order():
    d = Descriptor(MediaType.OCI_MANIFEST, Digest.parse(D1), 7,
                   platform=Platform("linux", "arm64", "v8"))
    assert d.to_json() == {"mediaType": MediaType.OCI_MANIFEST, "digest": D1, "size": 7,
                           "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}
    assert list(d.to_json()["platform"]) == ["architecture", "os", "variant"]
    assert Descriptor.from_json(d.to_json()) == d


@pytest.mark.parametrize("machine, expected", [
    ("x86_64", "linux/amd64"), ("aarch64", "linux/arm64/v8"), ("armv7l", "linux/arm/v7"),
    ("armv6l", "linux/arm/v6"), ("i686", "linux/386"), ("ppc64le", "linux/ppc64le"),
    ("s390x", "linux/s390x"), ("riscv64", "linux/riscv64"),
])
def test_host_platform_maps_machine_as_docker_does(monkeypatch, machine, expected):
    import builder.hostplatform as hp

    monkeypatch.setattr(hp, "_machine", lambda: machine)
    assert str(t.host_platform()) == expected


def test_platform_parse():
    assert Platform.parse("linux/arm64/v8") == Platform("linux", "arm64", "v8")
    assert Platform.parse("linux/arm64").matches(Platform("linux", "arm64", "v8"))
    assert not Platform.parse("linux/arm/v6").matches(Platform("linux", "arm", "v7"))
    with pytest.raises(ImageFormatError, match="expected os/arch"):
        Platform.parse("amd64")


def test_media_type_compression():
    assert MediaType.compression(MediaType.DOCKER_LAYER_GZIP) == "gzip"
    assert MediaType.compression(MediaType.OCI_LAYER_ZSTD) == "zstd"
    assert MediaType.compression(MediaType.OCI_LAYER) == ""
    assert MediaType.compression(MediaType.DOCKER_FOREIGN_LAYER) == "gzip"


def test_bytes_that_are_not_utf8_are_written_as_go_writes_them() -> None:
    from builder.oci._json import encode

    # a Dockerfile's stray bytes reach the config as lone surrogates: U+FFFD each, as in Go
    assert encode({"created_by": "echo \udcff\udcfe", "x": "é"}) == \
        '{"created_by":"echo \ufffd\ufffd","x":"é"}'.encode()
