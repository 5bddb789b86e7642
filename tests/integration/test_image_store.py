"""The local image store from the command line: images (docker's table), tag, inspect, rmi,
pull, save (one tarball that skopeo's oci-archive: and docker load both take), load (docker and
OCI archives, verified), and FROM of a stored name with no network at all."""
from __future__ import annotations

import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.integration.pushutil import assert_one_sentence_error, docker_loads, imported, stored_digest


def test_images_tag_inspect_rmi(tmp_path: Path) -> None:
    s = imported(tmp_path, "hello:v1")
    s.run("tag", "hello:v1", "example.com/team/hello:latest")
    table = s.run("images").stdout.splitlines()
    assert re.fullmatch(r"REPOSITORY +TAG +IMAGE ID +CREATED +SIZE", table[0])
    # columns start where docker's tabwriter puts them: widest cell + 3 spaces
    assert table[0].index("TAG") == len("example.com/team/hello") + 3
    rows = sorted(line.split()[:3] for line in table[1:])
    image_id = json.loads(s.run("inspect", "hello:v1").stdout)[0]["Id"]
    short = image_id.removeprefix("sha256:")[:12]
    assert rows == [["example.com/team/hello", "latest", short], ["hello", "v1", short]]
    assert re.search(r"(seconds|second) ago +\d+(\.\d+)?k?B$", table[1])
    info = json.loads(s.run("inspect", "example.com/team/hello").stdout)[0]
    assert info["Manifest"]["config"]["digest"] == image_id
    assert info["Config"]["rootfs"]["diff_ids"] and info["Name"] == "example.com/team/hello:latest"
    assert s.run("images", "-q").stdout.split() == [short]
    # an image ID is no name to push to (docker push takes names only): refused, and no
    # name made of the ID is left behind
    pushed = s.run("push", short, check=False)
    assert pushed.returncode == 1
    assert_one_sentence_error(pushed, f"no such image: {short}: an image does not exist locally")
    assert s.run("images", "-q").stdout.split() == [short] and len(s.run("images").stdout.splitlines()) == 3
    assert s.run("rmi", "hello:v1").stdout == "Untagged: hello:v1\n"
    assert_one_sentence_error(s.run("inspect", "hello:v1", check=False), "no such image: hello:v1")
    assert_one_sentence_error(s.run("rmi", "nothere", check=False), "no such image")
    usage = s.run("tag", "example.com/team/hello", "Bad Name", check=False)
    assert usage.returncode == 2 and "invalid image name" in usage.stderr
    s.run("rmi", short)  # by image ID: its last name goes
    assert s.run("images", "-q").stdout == ""


def test_save_then_skopeo_docker_and_pybuild_load(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    s = imported(tmp_path, "saved/one:1")
    (tmp_path / "rootfs" / "etc" / "second").write_text("2\n")
    s.run("import", str(tmp_path / "rootfs"), "saved/two:2")
    one, two = stored_digest(s, "saved/one:1"), stored_digest(s, "saved/two:2")
    both = tmp_path / "both.tar"
    s.run("save", "saved/one:1", "saved/two:2", "-o", str(both))
    with tarfile.open(both) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert sorted(t for e in manifest for t in e["RepoTags"]) == ["saved/one:1", "saved/two:2"]
    # skopeo takes it as an OCI archive, each image by its ref name (the tag)
    for ref_name, digest in (("1", one), ("2", two)):
        out = subprocess.run(["skopeo", "inspect", f"oci-archive:{both}:{ref_name}"],
                             capture_output=True, text=True, check=False, timeout=60)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["Digest"] == digest
    # pybuild load puts both back, same digests
    other = imported(tmp_path / "other", "unused:1")
    loaded = other.run("load", "-i", str(both)).stdout
    assert "Loaded image: saved/one:1" in loaded and "Loaded image: saved/two:2" in loaded
    assert stored_digest(other, "saved/one:1") == one and stored_digest(other, "saved/two:2") == two
    # a docker archive (written by skopeo) loads too, with the same image ID
    single = tmp_path / "one.tar"
    s.run("save", "saved/one:1", "-o", str(single))
    docker_tar = tmp_path / "docker.tar"
    subprocess.run(["skopeo", "copy", "--quiet", f"oci-archive:{single}",
                    f"docker-archive:{docker_tar}:fromdocker/app:3"], check=True, timeout=60)
    other.run("load", "-i", str(docker_tar))
    image_id = json.loads(s.run("inspect", "saved/one:1").stdout)[0]["Id"]
    assert json.loads(other.run("inspect", "fromdocker/app:3").stdout)[0]["Id"] == image_id
    # a damaged blob is refused and no name is written
    bad = tmp_path / "bad.tar"
    _corrupt_layer(single, bad)
    third = imported(tmp_path / "third", "unused:1")
    assert_one_sentence_error(third.run("load", "-i", str(bad), check=False), "does not match")
    assert "saved/one" not in third.run("images").stdout
    assert_one_sentence_error(third.run("load", "-i", str(tmp_path / "missing.tar"), check=False),
                              "no such file")
    # docker load takes the same tarball, where a private dockerd can run
    docker_loads(request, single, "saved/one:1", image_id)


def _corrupt_layer(src: Path, dest: Path) -> None:
    """Copy an OCI archive, flipping a byte of its largest blob (a layer)."""
    with tarfile.open(src) as tin, tarfile.open(dest, "w") as tout:
        members = tin.getmembers()
        biggest = max((m for m in members if m.name.startswith("blobs/") and m.isfile()),
                      key=lambda m: m.size)
        for m in members:
            data = tin.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            if m is biggest and data:
                data = bytes([data[0] ^ 1]) + data[1:]
            tout.addfile(m, None if data is None else __import__("io").BytesIO(data))


def test_pull_then_from_the_stored_name_needs_no_network(registry, busybox_image, fault_proxy_factory,
                                                          tmp_path: Path) -> None:
    from tests.fixtures.fault_proxy import FaultPlan

    proxy = fault_proxy_factory(registry.host, FaultPlan(every=1000))
    name = f"{proxy.host}/busybox:1.36"
    s = imported(tmp_path, "unused:1")
    assert s.run("pull", name).stdout.strip() == name
    assert stored_digest(s, name) == busybox_image.digest
    proxy.close()  # from now on, any request to that registry fails
    project = tmp_path / "project"
    project.mkdir()
    (project / "Dockerfile").write_text(f"FROM {name}\nLABEL stored=yes\n")
    out = tmp_path / "out.tar"
    s.run("build", "--progress", "plain", "-o", f"type=oci,dest={out}", str(project))
    assert out.exists()
    failed = s.run("build", "--pull", "--progress", "plain", "-o", f"type=oci,dest={out}",
                   str(project), check=False)
    assert_one_sentence_error(failed, proxy.host)


def test_a_pull_that_moves_a_tag_leaves_the_old_image_dangling(registry, tmp_path: Path) -> None:
    name = f"{registry.host}/moving/app:1"
    first = imported(tmp_path / "one", name)
    first.run("push", name)
    puller = imported(tmp_path / "puller", "unused:1")
    puller.run("pull", name)
    old = _short(puller, name)
    second = imported(tmp_path / "two", name, big=4096)  # other content, the same name
    second.run("push", name)
    puller.run("pull", name)
    new = _short(puller, name)
    assert new != old and new == _short(second, name)
    assert puller.run("images", "-f", "dangling=true", "-q").stdout.split() == [old]
    puller.run("pull", name)  # the same image again: nothing more is left behind
    assert puller.run("images", "-f", "dangling=true", "-q").stdout.split() == [old]


def test_a_from_that_pulls_a_moved_tag_leaves_the_old_base_dangling(registry, tmp_path: Path) -> None:
    name = f"{registry.host}/moving/base:1"
    first = imported(tmp_path / "one", name)
    first.run("push", name)
    builder = imported(tmp_path / "builder", "unused:1")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {name}\nCOPY a /a\n")
    (ctx / "a").write_text("a\n")
    builder.run("build", "-q", "-t", "app", str(ctx))  # FROM pulls the base and names it
    old = _short(builder, name)
    second = imported(tmp_path / "two", name, big=4096)
    second.run("push", name)
    builder.run("build", "-q", "--pull", "-t", "app", str(ctx))
    new = _short(builder, name)
    assert new != old and new == _short(second, name)
    dangling = builder.run("images", "-f", "dangling=true", "-q").stdout.split()
    assert old in dangling
    builder.run("build", "-q", "--pull", "-t", "app", str(ctx))  # the same base: nothing more
    assert builder.run("images", "-f", "dangling=true", "-q").stdout.split() == dangling


def test_a_file_that_is_no_archive_is_one_sentence(tmp_path: Path) -> None:
    text = tmp_path / "Dockerfile"
    text.write_text("FROM scratch\n")
    store = str(tmp_path / "store")
    for args, verb, code in [(("load", "-i", str(text)), "load", 1),
                             (("import", str(text), "x:1"), "import", 2)]:
        proc = subprocess.run(["pybuild", *args, "--root", store], capture_output=True, text=True)
        assert proc.returncode == code, proc.stderr
        # one sentence, not tarfile's list of every decompressor it tried
        assert proc.stderr.strip() == (f"cannot {verb} {text}: not a tar archive (plain, or "
                                       "compressed with gzip, bzip2 or xz)")


def test_an_image_without_a_name_is_kept_as_docker_keeps_it(tmp_path: Path) -> None:
    s = imported(tmp_path, "base:1")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM base:1\nCOPY a /a\nCMD [\"cat\", \"/a\"]\n")
    (ctx / "a").write_text("one\n")

    def dangling() -> list[str]:
        return s.run("images", "-f", "dangling=true", "-q").stdout.split()

    # a build without -t: listed as <none>, found by its ID
    first = s.run("build", "-q", str(ctx)).stdout.strip()
    short = first.removeprefix("sha256:")[:12]
    assert [line.split()[:3] for line in s.run("images").stdout.splitlines()[1:]] == [
        ["<none>", "<none>", short], ["base", "1", _short(s, "base:1")]]
    info = json.loads(s.run("inspect", short).stdout)[0]
    assert info["Id"] == first and info["Name"] == "<none>:<none>"
    assert dangling() == [short]
    assert s.run("images", "-f", "dangling=false", "-q").stdout.split() == [_short(s, "base:1")]
    assert s.run("images", "base").stdout.count("\n") == 2  # a REPOSITORY never matches <none>

    # a rebuild that takes the tag leaves the image it took it from dangling; the same
    # build again changes nothing
    assert s.run("build", "-q", "-t", "app", str(ctx)).stdout.strip() == first
    assert dangling() == []  # the same image, named now: no longer dangling
    (ctx / "a").write_text("two\n")
    second = s.run("build", "-q", "-t", "app", str(ctx)).stdout.strip()
    assert dangling() == [short] and s.run("build", "-q", "-t", "app", str(ctx)).stdout.strip() == second
    assert _short(s, "app") == second.removeprefix("sha256:")[:12]
    (ctx / "a").write_text("three\n")
    s.run("build", "-q", "-t", "app", str(ctx))
    assert sorted(dangling()) == sorted([short, second.removeprefix("sha256:")[:12]])

    # an image that keeps another name is not dangling when one name moves; once its
    # last name goes, it is deleted
    third = s.run("build", "-q", "-t", "app", "-t", "app:keep", str(ctx)).stdout.strip()
    (ctx / "a").write_text("four\n")
    s.run("build", "-q", "-t", "app", str(ctx))
    assert sorted(dangling()) == sorted([short, second.removeprefix("sha256:")[:12]])
    assert s.run("rmi", "app:keep").stdout == f"Untagged: app:keep\nDeleted: {third}\n"
    assert third.removeprefix("sha256:")[:12] not in s.run("images", "-q").stdout.split()

    # naming a dangling image by its ID, then removing that name, deletes it
    s.run("tag", short, "named:1")
    assert dangling() == [second.removeprefix("sha256:")[:12]]
    assert s.run("rmi", "named:1").stdout == f"Untagged: named:1\nDeleted: {first}\n"
    assert short not in s.run("images", "-q").stdout.split()
    assert_one_sentence_error(s.run("inspect", short, check=False), f"no such image: {short}")
    # and a dangling image goes by its ID
    assert s.run("rmi", second).stdout == f"Deleted: {second}\n"
    assert dangling() == []
    bad = s.run("images", "-f", "label=x", check=False)
    assert bad.returncode == 2 and "invalid filter 'label=x'" in bad.stderr and "Traceback" not in bad.stderr


def test_image_prune_removes_the_dangling_images_only(tmp_path: Path) -> None:
    s = imported(tmp_path, "base:1")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM base:1\nCOPY a /a\n")
    built = []
    for n in range(3):
        (ctx / "a").write_text(f"{n}\n")
        built.append(s.run("build", "-q", "-t", "app", str(ctx)).stdout.strip())
    untagged = s.run("build", "-q", "--label", "x=1", str(ctx)).stdout.strip()
    dangling = sorted([*built[:2], untagged])

    def listed() -> list[str]:
        return sorted(s.run("images", "-q").stdout.split())

    before = listed()
    asked = s.run("image", "prune", stdin="n\n")  # docker's question; no is the default
    assert "Are you sure you want to continue? [y/N]" in asked.stdout and listed() == before
    pruned = s.run("image", "prune", "-f").stdout
    deleted = sorted(line.removeprefix("deleted: ") for line in pruned.splitlines()
                     if line.startswith("deleted: "))
    assert pruned.startswith("Deleted Images:\n") and deleted == dangling
    assert listed() == sorted([built[2].removeprefix("sha256:")[:12], _short(s, "base:1")])
    assert s.run("images", "-f", "dangling=true", "-q").stdout == ""
    again = s.run("image", "prune", "-f").stdout
    assert "deleted:" not in again and "Total reclaimed space" in again


def test_an_archive_without_names_loads_dangling(tmp_path: Path) -> None:
    s = imported(tmp_path, "saved/one:1")
    image_id = json.loads(s.run("inspect", "saved/one:1").stdout)[0]["Id"]
    archive = tmp_path / "by-id.tar"
    s.run("save", image_id, "-o", str(archive))  # by ID: docker writes no name for it
    other = imported(tmp_path / "other", "unused:1")
    assert other.run("load", "-i", str(archive)).stdout == f"Loaded image ID: {image_id}\n"
    assert other.run("images", "-f", "dangling=true", "-q").stdout.split() == [image_id[7:19]]


def _short(s, name: str) -> str:
    return str(json.loads(s.run("inspect", name).stdout)[0]["Id"]).removeprefix("sha256:")[:12]
