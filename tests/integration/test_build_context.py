"""The build context as `docker build` takes it: -f (relative to the working directory, or -
for stdin), a context tar on stdin, .dockerignore and <Dockerfile>.dockerignore, COPY that
never reads outside the context, and the error a missing source gives."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from tests.fixtures.buildtools import pybuild, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")


def _tree(root: Path) -> dict[str, str]:
    """Every file under root, as text, and every symlink as '-> target'."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = path.read_text()
    return out


def test_dockerfile_from_f_relative_to_cwd_and_from_stdin(project: Path, store: str,
                                                          tmp_path: Path) -> None:
    write(project, {"a.txt": "a\n", "Dockerfile": "FROM scratch\nCOPY a.txt /default\n"})
    # the same relative name exists in the context and in the working directory: docker reads
    # -f relative to the working directory
    write(project, {"build/Dockerfile.dev": "FROM scratch\nCOPY a.txt /from-context-file\n"})
    cwd = write(tmp_path / "cwd", {"build/Dockerfile.dev": "FROM scratch\nCOPY a.txt /from-cwd\n"})
    out = tmp_path / "out1"
    pybuild("build", "--root", store, "-f", "build/Dockerfile.dev", "-o", f"type=local,dest={out}",
            str(project), cwd=cwd)
    assert _tree(out) == {"from-cwd": "a\n"}

    out = tmp_path / "out2"
    pybuild("build", "--root", store, "-f", "-", "-o", f"type=local,dest={out}", str(project),
            input=b"FROM scratch\nCOPY a.txt /from-stdin\n")
    assert _tree(out) == {"from-stdin": "a\n"}

    failed = pybuild("build", "--root", store, "-f", "nope/Dockerfile", str(project), cwd=cwd,
                     check=False)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert "nope/Dockerfile" in failed.stderr


def test_context_tar_on_stdin(store: str, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in {"Dockerfile": b"FROM scratch\nCOPY dir/ /d/\n", "dir/x": b"x\n",
                           "Other.Dockerfile": b"FROM scratch\nCOPY dir/x /other\n"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "out"
    pybuild("build", "--root", store, "-o", f"type=local,dest={out}", "-", input=buf.getvalue())
    assert _tree(out) == {"d/x": "x\n"}
    # -f names a file inside the tar, even when the working directory has one of that name
    (tmp_path / "Other.Dockerfile").write_text("FROM scratch\nCOPY dir/x /wrong-one\n")
    out = tmp_path / "out2"
    pybuild("build", "--root", store, "-f", "Other.Dockerfile", "-o", f"type=local,dest={out}", "-",
            input=buf.getvalue(), cwd=tmp_path)
    assert _tree(out) == {"other": "x\n"}
    # `docker build - < Dockerfile`: stdin that is not a tar is the Dockerfile, with no context
    out = tmp_path / "out3"
    pybuild("build", "--root", store, "-o", f"type=local,dest={out}", "-",
            input=b"FROM scratch\nCOPY <<EOF /inline\nhello\nEOF\n")
    assert _tree(out) == {"inline": "hello\n"}
    # nothing is left behind in the store's temp folder
    assert not any((Path(store) / "tmp").iterdir())


def test_dockerignore_and_per_dockerfile_ignore(project: Path, store: str, tmp_path: Path) -> None:
    write(project, {
        "keep/a.txt": "a", "keep/b.log": "b", "keep/deep/c.log": "c", "keep/deep/important.log": "i",
        "top.log": "t", "secret/key": "k", "notes.md": "n",
        ".dockerignore": ("# comments are ignored\n**/*.log\n!keep/deep/important.log\n/secret\n"
                          "Dockerfile\n.dockerignore\n"),
        "Dockerfile": "FROM scratch\nCOPY . /ctx/\n",
    })
    out = tmp_path / "out"
    pybuild("build", "--root", store, "-o", f"type=local,dest={out}", str(project))
    # the Dockerfile and .dockerignore can be excluded from COPY (they are still read)
    assert _tree(out) == {"ctx/keep/a.txt": "a", "ctx/keep/deep/important.log": "i",
                          "ctx/notes.md": "n"}

    # <Dockerfile>.dockerignore beside the Dockerfile wins over the context's .dockerignore
    write(project, {"docker/app.Dockerfile": "FROM scratch\nCOPY . /ctx/\n",
                    "docker/app.Dockerfile.dockerignore": "*.md\ndocker\n.dockerignore\n"})
    out = tmp_path / "out2"
    pybuild("build", "--root", store, "-f", str(project / "docker/app.Dockerfile"),
            "-o", f"type=local,dest={out}", str(project))
    tree = _tree(out)
    assert "ctx/notes.md" not in tree and "ctx/top.log" in tree and "ctx/secret/key" in tree
    assert "ctx/Dockerfile" in tree and "ctx/keep/b.log" in tree


def test_copy_never_reads_outside_the_context(project: Path, store: str, tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("OUTSIDE\n")
    write(project, {"outside.txt": "inside-outside\n", "etc/passwd": "context passwd\n",
                    "data/real.txt": "real\n"})
    (project / "up").symlink_to("../..")                         # a dir link pointing far out
    (project / "abs").symlink_to("/etc/passwd")                  # an absolute link
    (project / "data/rel").symlink_to("../../outside.txt")       # a relative link escaping
    write(project, {"Dockerfile": (
        "FROM scratch\n"
        "COPY ../outside.txt /1\n"
        "COPY /outside.txt /2\n"
        "COPY abs /3\n"
        "COPY up/outside.txt /4\n"
        "COPY data/rel /5\n"
        "COPY data /6/\n")})
    out = tmp_path / "out"
    pybuild("build", "--root", store, "-o", f"type=local,dest={out}", str(project))
    tree = _tree(out)
    assert tree["1"] == tree["2"] == tree["4"] == tree["5"] == "inside-outside\n"
    assert tree["3"] == "context passwd\n"
    # links met while copying a folder are copied as links, not followed
    assert tree["6/rel"] == "-> ../../outside.txt" and tree["6/real.txt"] == "real\n"
    assert "OUTSIDE" not in "".join(tree.values())


def test_missing_source_error(project: Path, store: str) -> None:
    write(project, {"there.txt": "x", "build.key": "k", ".dockerignore": "# c\n*.key\n",
                    "Dockerfile": "FROM scratch\nCOPY there.txt /\n\nCOPY nothere.txt /\n"})
    failed = pybuild("build", "--root", store, str(project), check=False)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert 'Dockerfile:4: COPY failed: "nothere.txt" not found in build context' in failed.stderr

    write(project, {"Dockerfile": "FROM scratch\nCOPY build.key /\n"})
    failed = pybuild("build", "--root", store, str(project), check=False)
    assert 'Dockerfile:2: COPY failed: "build.key" not found in build context' in failed.stderr
    assert "*.key" in failed.stderr  # the rule that excluded it

    write(project, {"other.Dockerfile": "FROM scratch\nADD gone /\n"})
    failed = pybuild("build", "--root", store, "-f", str(project / "other.Dockerfile"),
                     str(project), check=False)
    assert 'other.Dockerfile:2: ADD failed: "gone" not found in build context' in failed.stderr
