"""ADD from a URL and from a git repository, served by real servers on loopback."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from email.utils import formatdate
from pathlib import Path
from typing import Iterator

import pytest

from builder.copy import SourceSpec, copy_into
from builder.errors import ContextError
from tests.integration import runbuild
from tests.integration.runbuild import Project

bb_layout = runbuild.bb_layout
project = runbuild.project

LAST_MODIFIED = 1_600_000_000
PAYLOAD = b"remote payload\n" * 1000


def _tgz() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("inside.txt")
        ti.size = 2
        tf.addfile(ti, io.BytesIO(b"hi"))
    return gzip.compress(buf.getvalue(), mtime=0)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/files/payload.txt":
            body = PAYLOAD
            self.send_response(200)
            self.send_header("Last-Modified", formatdate(LAST_MODIFIED, usegmt=True))
        elif self.path == "/files/archive.tar.gz":
            body = _tgz()
            self.send_response(200)
        elif self.path.startswith("/files/"):
            self.send_error(404)
            return
        else:
            super().do_GET()  # the git repositories under the served directory
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    served = tmp_path_factory.mktemp("served")
    handler = lambda *a, **kw: _Handler(*a, directory=os.fspath(served), **kw)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    r.mkdir()
    return r


def test_add_url_into_dir_keeps_name_mode_600_and_last_modified(server: tuple[str, Path], rootfs: Path) -> None:
    base, _ = server
    copy_into(rootfs, [SourceSpec.url(f"{base}/files/payload.txt")], "/dl/", is_add=True)
    p = rootfs / "dl/payload.txt"
    assert p.read_bytes() == PAYLOAD
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert os.stat(p).st_mtime == LAST_MODIFIED


def test_add_url_to_a_file_name(server: tuple[str, Path], rootfs: Path) -> None:
    base, _ = server
    copy_into(rootfs, [SourceSpec.url(f"{base}/files/payload.txt")], "/etc/renamed", is_add=True)
    assert (rootfs / "etc/renamed").read_bytes() == PAYLOAD


def test_add_url_checksum_ok_and_mismatch(server: tuple[str, Path], rootfs: Path) -> None:
    base, _ = server
    url = f"{base}/files/payload.txt"
    good = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
    copy_into(rootfs, [SourceSpec.url(url, checksum=good)], "/ok/", is_add=True)
    assert (rootfs / "ok/payload.txt").exists()
    bad = "sha256:" + "0" * 64
    with pytest.raises(ContextError) as err:
        copy_into(rootfs, [SourceSpec.url(url, checksum=bad)], "/bad/", is_add=True)
    # BuildKit's http source words it so
    assert str(err.value) == f"digest mismatch for {url}: {good} (expected: {bad})"
    assert not (rootfs / "bad/payload.txt").exists()


def test_add_url_archives_are_not_extracted(server: tuple[str, Path], rootfs: Path) -> None:
    base, _ = server
    copy_into(rootfs, [SourceSpec.url(f"{base}/files/archive.tar.gz")], "/x/", is_add=True)
    assert (rootfs / "x/archive.tar.gz").read_bytes() == _tgz()
    assert os.stat(rootfs / "x/archive.tar.gz").st_mtime == 0  # no Last-Modified: time 0
    copy_into(rootfs, [SourceSpec.url(f"{base}/files/archive.tar.gz")], "/y/", is_add=True, unpack_archives=True)
    assert (rootfs / "y/inside.txt").read_bytes() == b"hi"


def test_add_url_404_names_url_and_status(server: tuple[str, Path], rootfs: Path) -> None:
    base, _ = server
    with pytest.raises(ContextError, match=r"failed to load .*/files/missing: invalid response status 404"):
        copy_into(rootfs, [SourceSpec.url(f"{base}/files/missing")], "/x/", is_add=True)


# ------------------------------------------------------------------ git


def _git(*args: str, cwd: Path) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@e", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@e", GIT_CONFIG_GLOBAL="/dev/null")
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def git_repo(server: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    base, served = server
    work = tmp_path_factory.mktemp("work")
    _git("init", "-q", "-b", "main", ".", cwd=work)
    (work / "README").write_text("v1\n")
    (work / "docs").mkdir()
    (work / "docs/guide.md").write_text("guide v1\n")
    _git("add", ".", cwd=work)
    _git("commit", "-q", "-m", "one", cwd=work)
    first = _git("rev-parse", "HEAD", cwd=work)
    _git("tag", "v1", cwd=work)
    (work / "README").write_text("v2\n")
    _git("commit", "-q", "-am", "two", cwd=work)
    second = _git("rev-parse", "HEAD", cwd=work)
    _git("clone", "-q", "--bare", ".", os.fspath(served / "repo.git"), cwd=work)
    _git("update-server-info", cwd=served / "repo.git")
    return {"url": f"{base}/repo.git", "first": first, "second": second}


def test_add_git_default_branch_without_git_dir(git_repo: dict[str, str], rootfs: Path) -> None:
    copy_into(rootfs, [SourceSpec.git(git_repo["url"])], "/src", is_add=True)
    assert (rootfs / "src/README").read_text() == "v2\n"
    assert (rootfs / "src/docs/guide.md").read_text() == "guide v1\n"
    assert not (rootfs / "src/.git").exists()


def test_add_git_tag_commit_and_subdir(git_repo: dict[str, str], rootfs: Path) -> None:
    url = git_repo["url"]
    copy_into(rootfs, [SourceSpec.git(f"{url}#v1")], "/tag", is_add=True)
    copy_into(rootfs, [SourceSpec.git(f"{url}#{git_repo['first']}")], "/commit", is_add=True)
    copy_into(rootfs, [SourceSpec.git(f"{url}#main:docs")], "/sub", is_add=True)
    assert (rootfs / "tag/README").read_text() == "v1\n"
    assert (rootfs / "commit/README").read_text() == "v1\n"
    assert sorted(os.listdir(rootfs / "sub")) == ["guide.md"]


def test_add_git_keep_git_dir_and_checksum(git_repo: dict[str, str], rootfs: Path) -> None:
    url = git_repo["url"]
    copy_into(rootfs, [SourceSpec.git(url, keep_git_dir=True, checksum=git_repo["second"])], "/k", is_add=True)
    assert (rootfs / "k/.git").is_dir()
    with pytest.raises(ContextError, match=f"^expected checksum to match {git_repo['first']}, "
                                           f"got {git_repo['second']}$"):
        copy_into(rootfs, [SourceSpec.git(url, checksum=git_repo["first"])], "/m", is_add=True)


def test_add_git_missing_ref(git_repo: dict[str, str], rootfs: Path) -> None:
    with pytest.raises(ContextError, match="not found"):
        copy_into(rootfs, [SourceSpec.git(f"{git_repo['url']}#nope")], "/n", is_add=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")
def test_add_url_through_a_build(server: tuple[str, Path], project: Project) -> None:
    # what a user sees: the file's time 0 without Last-Modified, BuildKit's errors
    base, _ = server
    project.dockerfile(f"FROM bb\nADD {base}/files/archive.tar.gz {base}/files/payload.txt /d/\n")
    project.build()
    layer = project.image().layer(1)
    assert (layer["d/archive.tar.gz"][0].mtime, layer["d/archive.tar.gz"][0].mode) == (0, 0o600)
    assert layer["d/payload.txt"][0].mtime == LAST_MODIFIED
    for line, message in [
            (f"ADD {base}/files/missing /x", "failed to load cache key: invalid response status 404"),
            (f"ADD --checksum=sha256:{'0' * 64} {base}/files/payload.txt {base}/files/missing /d/",
             "checksum can't be specified for multiple sources"),
            (f"ADD --checksum=sha256:{'0' * 64} Dockerfile /d/",
             "checksum requires HTTP(S) or Git sources")]:
        project.dockerfile(f"FROM bb\n{line}\n")
        failed = project.build(check=False)
        assert f"Dockerfile:2: {message}\n" in failed.stderr, failed.stderr
