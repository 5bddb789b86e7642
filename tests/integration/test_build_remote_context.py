"""`pybuild build URL`: git repositories and remote files as the build context, fetched
from a real git server (git http-backend, and the dumb protocol) and a file server on
loopback (tests/fixtures/gitserver.py). What users see: image files, cache hits, messages."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import zstandard

from builder.gitsource import is_transient
from tests.fixtures.gitserver import GitServer, git
from tests.integration import runbuild
from tests.integration.runbuild import OciImage

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")

bb_layout = runbuild.bb_layout

DOCKERFILE = "FROM bb\nCOPY stable.txt /stable/\nCOPY . /ctx/\n"


class Builds:
    """Builds of one store, each written to its own OCI archive."""

    def __init__(self, tmp: Path, bb: Path) -> None:
        self.tmp, self.store, self.bb, self.n = tmp, tmp / "store", bb, 0

    def run(self, context: str, *args: str, check: bool = True,
            env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], Path]:
        self.n += 1
        out = self.tmp / f"out{self.n}.tar"
        proc = runbuild.pybuild("build", "--root", str(self.store), "--progress", "plain",
                                "--build-context", f"bb=oci-layout://{self.bb}:latest",
                                "-o", f"type=oci,dest={out}", "--metadata-file",
                                str(out.with_suffix(".json")), *args, context, check=check, env=env)
        return proc, out

    def tmp_entries(self) -> list[str]:
        return sorted(os.listdir(self.store / "tmp")) if (self.store / "tmp").exists() else []


@pytest.fixture
def builds(tmp_path: Path, bb_layout: Path) -> Builds:
    return Builds(tmp_path, bb_layout)


def _cached(meta_path: Path) -> list[bool]:
    return [s["cached"] for s in json.loads(meta_path.read_text())["pybuild.steps"]]


def _files(image: OciImage, layer: int) -> dict[str, bytes | None]:
    return {name: data for name, (info, data) in image.layer(layer).items()}


@pytest.fixture(scope="module")
def repo(git_server: GitServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """app.git: a Dockerfile, a .dockerignore, a subdir with its own Dockerfile, a link, an
    executable, and a submodule (lib.git); tags v1 (light) and v1a (annotated)."""
    lib = tmp_path_factory.mktemp("lib")
    git("init", "-q", "-b", "main", ".", cwd=lib)
    (lib / "lib.txt").write_text("lib\n")
    git("add", ".", cwd=lib)
    git("commit", "-qm", "lib", cwd=lib)
    lib_url = git_server.publish(lib, "lib")
    work = tmp_path_factory.mktemp("app")
    git("init", "-q", "-b", "main", ".", cwd=work)
    (work / "Dockerfile").write_text(DOCKERFILE)
    (work / "stable.txt").write_text("stable\n")
    (work / "changing.txt").write_text("one\n")
    (work / ".dockerignore").write_text("changing.txt\n")
    (work / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(work / "run.sh", 0o755)
    os.symlink("stable.txt", work / "link")
    (work / "app").mkdir()
    (work / "app/Dockerfile").write_text("FROM bb\nCOPY . /app/\n")
    (work / "app/Other.Dockerfile").write_text("FROM bb\nCOPY f.txt /other/\n")
    (work / "app/f.txt").write_text("f\n")
    (work / "docker.Dockerfile").write_text("ARG BASE\nFROM $BASE\nCOPY . /ctx/\n")
    git("add", ".", cwd=work)
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", lib_url, "vendor/lib", cwd=work)
    git("commit", "-qm", "one", cwd=work)
    git("tag", "v1", cwd=work)
    git("tag", "-a", "v1a", "-m", "annotated", cwd=work)
    first = git("rev-parse", "HEAD", cwd=work)
    url = git_server.publish(work, "app")
    return {"url": url, "work": work, "first": first, "server": git_server}


def test_git_context_is_the_checkout_and_a_rebuild_hits_the_cache(repo: dict, builds: Builds) -> None:
    url = str(repo["url"])
    proc, out = builds.run(url)
    assert f"#1 [internal] load git source {url}\n" in proc.stderr
    image = OciImage(out)
    files = _files(image, 2)
    # the whole checkout, submodule included; no .git anywhere; .dockerignore not applied (BuildKit)
    assert files["ctx/changing.txt"] == b"one\n"
    assert files["ctx/vendor/lib/lib.txt"] == b"lib\n"
    assert image.layer(2)["ctx/run.sh"][0].mode == 0o755
    assert image.layer(2)["ctx/link"][0].linkname == "stable.txt"
    assert not [n for n in files if n.endswith(".git") or "/.git/" in n]
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["pybuild.context"] == {"type": "git", "url": url, "ref": "refs/heads/main",
                                       "commit": repo["first"]}
    # the same commit again, by another name: every step a cache hit, the same image
    _, again = builds.run(f"{url}#v1a")
    assert _cached(again.with_suffix(".json")) == [True, True]
    assert OciImage(again).layer_digests == image.layer_digests
    assert builds.tmp_entries() == []
    assert not (builds.store / "statcache.json.d").exists()  # no stat cache for a scratch folder


def test_a_new_commit_misses_only_what_changed(repo: dict, builds: Builds, tmp_path: Path) -> None:
    server: GitServer = repo["server"]  # type: ignore[assignment]
    work = tmp_path / "clone"
    shutil.copytree(Path(repo["work"]), work, symlinks=True)  # type: ignore[arg-type]
    (work / "changing.txt").write_text("two\n")
    git("commit", "-qam", "two", cwd=work)
    url = server.publish(work, "moving")
    git("checkout", "-q", "--detach", str(repo["first"]), cwd=work)  # the old commit on its own branch
    git("branch", "-q", "old", cwd=work)
    server.publish(work, "moving")
    _, first = builds.run(f"{url}#old")
    _, second = builds.run(f"{url}#main")
    assert _cached(second.with_suffix(".json")) == [True, False]
    assert _files(OciImage(second), 2)["ctx/changing.txt"] == b"two\n"
    assert OciImage(second).layer_digests[1] == OciImage(first).layer_digests[1]


def test_ref_subdir_query_and_dockerfile_flag(repo: dict, builds: Builds) -> None:
    url = str(repo["url"])
    _, out = builds.run(f"{url}#v1:app")
    assert sorted(_files(OciImage(out), 1)) == ["app", "app/Dockerfile", "app/Other.Dockerfile", "app/f.txt"]
    _, same = builds.run(f"{url}?tag=v1&subdir=app")
    assert OciImage(same).layer_digests == OciImage(out).layer_digests
    # -f is relative to the context (the subdir), not to the working directory
    _, other = builds.run(f"{url}#main:app", "-f", "Other.Dockerfile")
    assert list(_files(OciImage(other), 1)) == ["other", "other/f.txt"]
    _, whole = builds.run(url, "-f", "app/Dockerfile")  # the context stays the whole checkout
    assert {"app/stable.txt", "app/app/f.txt"} <= set(_files(OciImage(whole), 1))


def test_keep_git_dir_build_arg_keeps_a_working_git_dir(repo: dict, builds: Builds, tmp_path: Path) -> None:
    url = str(repo["url"])
    _, out = builds.run(url, "--build-arg", "BUILDKIT_CONTEXT_KEEP_GIT_DIR=1")
    files = _files(OciImage(out), 2)
    assert files["ctx/.git/HEAD"] == f"{repo['first']}\n".encode()  # detached at the commit
    assert b"gitdir:" in files["ctx/vendor/lib/.git"]  # type: ignore[operator]
    assert "ctx/.git/FETCH_HEAD" not in files
    # a subdir never carries .git (BuildKit)
    _, sub = builds.run(f"{url}?keep-git-dir=true&subdir=app")
    assert not [n for n in _files(OciImage(sub), 1) if ".git" in n]


def test_source_date_epoch_gives_files_the_commit_time(repo: dict, builds: Builds) -> None:
    # dockerui asks for the commit's time when SOURCE_DATE_EPOCH is set; ?mtime=commit too
    commit_time = 1_577_836_800  # GIT_COMMITTER_DATE of tests/fixtures/gitserver.py
    for args in (["--build-arg", "SOURCE_DATE_EPOCH=1600000000"], []):
        suffix = "" if args else "?mtime=commit"
        _, out = builds.run(f"{repo['url']}{suffix}", "--no-cache", *args)
        layer = OciImage(out).layer(2)
        assert {layer[n][0].mtime for n in ("ctx", "ctx/app/f.txt", "ctx/vendor/lib/lib.txt")} == {commit_time}


def test_the_dumb_protocol_works_without_shallow_fetches(repo: dict, builds: Builds) -> None:
    server: GitServer = repo["server"]  # type: ignore[assignment]
    _, out = builds.run(f"{server.url}/dumb/app.git#{repo['first']}:app")
    assert "app/f.txt" in _files(OciImage(out), 1)


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_600_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_tarball_contexts_and_a_plain_dockerfile(git_server: GitServer, builds: Builds) -> None:
    plain = _tar({"Dockerfile": b"FROM bb\nCOPY . /ctx/\n", "sub/a.txt": b"a\n", ".dockerignore": b"sub\n"})
    git_server.files.update({
        "ctx.tar": plain, "ctx.tar.gz": gzip.compress(plain, mtime=0),
        "ctx.tar.zst": zstandard.ZstdCompressor().compress(plain),
        "Dockerfile": b"FROM bb\nCOPY . /ctx/\n", "bad.gz": gzip.compress(b"not a tar"),
    })
    digests = set()
    for name in ("ctx.tar", "ctx.tar.gz", "ctx.tar.zst"):
        proc, out = builds.run(f"{git_server.url}/files/{name}")
        assert "#1 [internal] load remote build context\n" in proc.stderr
        assert sorted(_files(OciImage(out), 1)) == ["ctx", "ctx/.dockerignore", "ctx/Dockerfile",
                                                   "ctx/sub", "ctx/sub/a.txt"]
        digests.add(OciImage(out).layer_digests[1])
        assert json.loads(out.with_suffix(".json").read_text())["pybuild.context"]["archive"] is True
    assert len(digests) == 1  # the same files, however they were compressed: the same layer
    # not an archive: the file is the Dockerfile, and the context holds it alone as "context"
    _, out = builds.run(f"{git_server.url}/files/Dockerfile")
    layer = OciImage(out).layer(1)
    assert sorted(layer) == ["ctx", "ctx/context"] and layer["ctx/context"][0].mode == 0o600
    proc, _ = builds.run(f"{git_server.url}/files/bad.gz", check=False)
    assert "compressed data that holds no tar archive" in proc.stderr
    assert builds.tmp_entries() == []


def test_named_contexts_from_a_git_repository_and_a_url(repo: dict, builds: Builds, tmp_path: Path) -> None:
    """--build-context NAME=URL, as dockerui loads one: a git reference is its checkout (for
    COPY --from and as a FROM's files), any other URL the downloaded file as it came."""
    server: GitServer = repo["server"]  # type: ignore[assignment]
    url = str(repo["url"])
    tarball = _tar({"a.txt": b"a\n"})
    server.files["lib.tar"] = tarball
    ctx = tmp_path / "local"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM src AS checkout\n"
        "FROM bb\n"
        "COPY --from=src stable.txt /from-git/\n"
        "COPY --from=app . /app/\n"
        "COPY --from=checkout /vendor/lib/lib.txt /from-stage/\n"
        "COPY --from=dl context /dl/\n")
    proc, out = builds.run(str(ctx), "--build-context", f"src={url}",
                           "--build-context", f"app={url}#main:app",
                           "--build-context", f"dl={server.url}/files/lib.tar")
    assert f"[context src] load git source {url}\n" in proc.stderr
    assert f"[context dl] {server.url}/files/lib.tar\n" in proc.stderr
    image = OciImage(out)
    assert _files(image, 1) == {"from-git": None, "from-git/stable.txt": b"stable\n"}
    assert sorted(_files(image, 2)) == ["app", "app/Dockerfile", "app/Other.Dockerfile", "app/f.txt"]
    assert _files(image, 3) == {"from-stage": None, "from-stage/lib.txt": b"lib\n"}
    # the download is kept whole (not extracted), as the one file "context"
    assert _files(image, 4) == {"dl": None, "dl/context": tarball}
    assert builds.tmp_entries() == []
    # a rebuild of the same commit and the same download: every step from the cache
    _, again = builds.run(str(ctx), "--build-context", f"src={url}",
                          "--build-context", f"app={url}#main:app",
                          "--build-context", f"dl={server.url}/files/lib.tar")
    assert all(_cached(again.with_suffix(".json")))
    assert OciImage(again).layer_digests == image.layer_digests
    # the provenance names each as BuildKit's git and HTTP sources: the URL and its digest
    runbuild.pybuild("build", "--root", str(builds.store), "--progress", "quiet",
                     "--build-context", f"bb=oci-layout://{builds.bb}:latest",
                     "--build-context", f"src={url}", "--build-context", f"app={url}#main:app",
                     "--build-context", f"dl={server.url}/files/lib.tar",
                     "--provenance", "mode=max", "-o", f"type=local,dest={tmp_path / 'prov'}", str(ctx))
    predicate = json.loads((tmp_path / "prov" / "provenance.json").read_text())["predicate"]
    materials = predicate["materials"]
    assert {"uri": url, "digest": {"sha1": repo["first"]}} in materials
    assert {"uri": f"{url}#main:app", "digest": {"sha1": repo["first"]}} in materials
    assert {"uri": f"{server.url}/files/lib.tar",
            "digest": {"sha256": hashlib.sha256(tarball).hexdigest()}} in materials
    args = predicate["invocation"]["parameters"]["args"]
    assert args["context:src"] == url and args["context:dl"] == f"{server.url}/files/lib.tar"
    assert [x["name"] for x in predicate["invocation"]["parameters"]["locals"]] == ["context", "dockerfile"]
    # a fault names the context; nothing is left behind
    proc, _ = builds.run(str(ctx), "--build-context", f"src={url}#nope",
                         "--build-context", f"app={url}", "--build-context", f"dl={url}", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert (f"--build-context src: git repository {url}: ref 'nope' not found (no branch, tag or "
            "commit of that name)") in proc.stderr.splitlines()
    proc, _ = builds.run(str(ctx), "--build-context", "src=ftp://h/x.tar", check=False)
    assert proc.returncode == 2
    assert builds.tmp_entries() == []


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        ("#nope", "git repository {url}: ref 'nope' not found (no branch, tag or commit of that name)"),
        ("#main:nodir", "git repository {url} at {short}: subdirectory 'nodir' not found"),
        ("#main:stable.txt", "git repository {url} at {short}: subdirectory 'stable.txt' not a directory"),
        ("#main:vendor", ("failed to read the Dockerfile: Dockerfile not found in the git repository "
                          "{url} at {short} (subdir vendor)")),
    ],
)
def test_git_context_errors_name_the_fault(repo: dict, builds: Builds, suffix: str, message: str) -> None:
    url = str(repo["url"])
    proc, _ = builds.run(url + suffix, check=False)
    assert proc.returncode == 1
    assert message.format(url=url, short=str(repo["first"])[:12]) in proc.stderr.splitlines()
    assert "Traceback" not in proc.stderr
    assert builds.tmp_entries() == []


def test_unreachable_hosts_and_missing_git(repo: dict, builds: Builds, tmp_path: Path) -> None:
    from tests.fixtures.registry import free_port

    port = free_port()
    proc, _ = builds.run(f"http://127.0.0.1:{port}/x.git", check=False)
    assert f"cannot read git repository http://127.0.0.1:{port}/x.git: unable to access " in proc.stderr
    proc, _ = builds.run(f"http://127.0.0.1:{port}/ctx.tar", check=False)
    assert f"failed to load http://127.0.0.1:{port}/ctx.tar: Connection refused" in proc.stderr.splitlines()
    # no git on PATH: pybuild started by this interpreter (the console script found on
    # PATH may be a pyenv shim, which needs bash and more from PATH)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "pybuild"
    launcher.write_text(f"#!{sys.executable}\nfrom builder.cli import main\nmain()\n")
    launcher.chmod(0o755)
    proc, _ = builds.run(str(repo["url"]), check=False, env={"PATH": str(bin_dir)})
    assert f"git is not installed: {repo['url']} is a git repository" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert builds.tmp_entries() == []


def test_a_dropped_connection_is_tried_again_and_a_lasting_one_is_named(repo: dict, builds: Builds) -> None:
    server: GitServer = repo["server"]  # type: ignore[assignment]
    url = str(repo["url"])
    try:
        server.reset_next(2)  # the first listing fails twice, the third attempt gets through
        proc, out = builds.run(url)
        assert server.reset_next(0) == 0
        assert _files(OciImage(out), 2)["ctx/stable.txt"] == b"stable\n"
        assert "Traceback" not in proc.stderr
        server.reset_next(3)  # three in a row: the build fails, and says what and how often
        proc, _ = builds.run(url, check=False)
        assert proc.returncode == 1
        assert (f"cannot read git repository {url}: unable to access '{url}/': Recv failure: "
                "Connection reset by peer (tried 3 times)") in proc.stderr.splitlines()
        assert server.reset_next(0) == 0 and builds.tmp_entries() == []
    finally:
        server.reset_next(0)


def test_ctrl_c_during_the_fetch_removes_the_scratch_folder(git_server: GitServer, builds: Builds) -> None:
    proc = subprocess.Popen(["pybuild", "build", "--root", str(builds.store), "--progress", "plain",
                             f"{git_server.url}/slow/x.git"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not [e for e in builds.tmp_entries() if e.startswith("remote-context-")]:
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.3)  # git is fetching
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert builds.tmp_entries() == []


def _entries(layer: bytes) -> set[tuple[object, ...]]:
    """A layer's entries as users see them: name, type, mode, owner, data or link target."""
    out = set()
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        for info in tar:
            data = tar.extractfile(info).read() if info.isreg() else info.linkname  # type: ignore[union-attr]
            out.add((info.name.removeprefix("./").rstrip("/"), info.type, info.mode & 0o7777,
                     info.uid, info.gid, data))
    return out


def test_git_context_files_match_docker_buildkit(repo: dict, builds: Builds, docker_cli,
                                                 busybox_image, tmp_path: Path) -> None:
    """docker 20.10's BuildKit fetches the same repository itself (its daemon reaches the
    loopback server): the COPY layer holds the same files, modes and links. Its one
    difference (docs/remote-contexts.md): it leaves the submodule's .git file, pointing
    into its own store; pybuild drops it with .git. (docker 20.10 wants an explicit ref:
    without one it looks for master.)"""
    url = f"{repo['url']}#main"
    tag = "pybuild-compare-remote/git:latest"
    build = ("build", "--network=host", "--progress=plain", "-t", tag, "-f", "docker.Dockerfile",
             "--build-arg", f"BASE={busybox_image.ref}", url)
    done = docker_cli.run(*build)
    if done.returncode != 0 and is_transient(done.stderr):  # a dropped connection, as pybuild retries
        time.sleep(2)
        done = docker_cli.run(*build)
    assert done.returncode == 0, done.stderr
    docker_cli.check("save", "-o", str(tmp_path / "docker.tar"), tag)
    docker_cli.run("rmi", "-f", tag)
    with tarfile.open(tmp_path / "docker.tar") as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        theirs = _entries(tar.extractfile(manifest["Layers"][-1]).read())  # type: ignore[union-attr]
    _, out = builds.run(url, "-f", "docker.Dockerfile", "--build-arg", f"BASE={busybox_image.ref}")
    ours = _entries(OciImage(out).layer_bytes(-1))
    assert theirs - ours == {e for e in theirs if e[0] == "ctx/vendor/lib/.git"}
    assert ours - theirs == set()


def test_the_provenance_names_the_git_context_and_its_commit(repo: dict, builds: Builds, tmp_path: Path) -> None:
    # BuildKit's git source material and configSource: the URL asked for, the commit as
    # sha1; no local source is named (the Dockerfile came with the checkout)
    url = f"{repo['url']}#main:app"
    runbuild.pybuild("build", "--root", str(builds.store), "--progress", "quiet",
                     "--build-context", f"bb=oci-layout://{builds.bb}:latest",
                     "--provenance", "mode=max", "-o", f"type=local,dest={tmp_path / 'out'}", url)
    predicate = json.loads((tmp_path / "out" / "provenance.json").read_text())["predicate"]
    sha1 = {"sha1": repo["first"]}
    assert predicate["invocation"]["configSource"] == {"uri": url, "digest": sha1, "entryPoint": "Dockerfile"}
    assert {"uri": url, "digest": sha1} in predicate["materials"]
    assert "locals" not in predicate["invocation"]["parameters"]
