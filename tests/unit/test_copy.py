"""COPY onto a root filesystem: destinations, directories, links, modes, owners, times."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from builder.context import BuildContext, DirTree
from builder.copy import SourceSpec, copy_into, dest_path
from builder.errors import ContextError
from tests.unit.test_context import make

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="ownership needs root")


@pytest.fixture
def ctx(tmp_path: Path) -> BuildContext:
    root = make(
        tmp_path / "ctx",
        {
            "foo.go": "foo-contents",
            "bar.go": "bar-contents",
            "sub/dir1/dir2/foo": "deep",
            "file": "hello",
            "empty": None,
        },
    )
    return BuildContext.open(root, root / "Dockerfile")


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    r.mkdir()
    return r


def cp(rootfs: Path, tree, srcs: list[str], dest: str, **kw) -> None:
    copy_into(rootfs, [SourceSpec.path(tree, s) for s in srcs], dest, **kw)


def tree_of(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath, n)
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = p.read_text()
    return out


# ------------------------------------------------------------------ destinations


@pytest.mark.parametrize(
    "dest,workdir,want",
    [
        ("/a/b", "/", ("a/b", False)),
        ("b/", "/w", ("w/b", True)),
        (".", "/w", ("w", True)),
        ("", "/w", ("w", True)),
        ("../x", "/w/v", ("w/x", False)),
        ("../", "/w/v", ("w", True)),
        ("x/.", "/", ("x", True)),
    ],
)
def test_dest_is_relative_to_workdir(dest: str, workdir: str, want: tuple[str, bool]) -> None:
    assert dest_path(dest, workdir) == want


def test_buildkit_copy_wildcards_suite(ctx: BuildContext, rootfs: Path) -> None:
    """BuildKit's testCopyWildcards, step by step."""
    cp(rootfs, ctx, ["*.go"], "/gofiles/")
    cp(rootfs, ctx, ["f*.go"], "foo2.go")
    cp(rootfs, ctx, ["sub/*"], "/subdest/")
    cp(rootfs, ctx, ["sub/*/dir2/foo"], "/subdest2/")
    cp(rootfs, ctx, ["sub/*/dir2/foo"], "/subdest3/bar")
    cp(rootfs, ctx, ["sub/dir1/"], "subdest4")
    cp(rootfs, ctx, ["sub/dir1/."], "subdest5")
    cp(rootfs, ctx, ["sub/dir1"], "subdest6")
    t = tree_of(rootfs)
    assert t["gofiles/foo.go"] == "foo-contents" and t["gofiles/bar.go"] == "bar-contents"
    assert t["foo2.go"] == "foo-contents"
    assert t["subdest/dir2/foo"] == "deep"
    assert t["subdest2/foo"] == "deep"
    assert t["subdest3/bar"] == "deep"
    for n in (4, 5, 6):
        assert t[f"subdest{n}/dir2/foo"] == "deep"


def test_relative_dest_follows_workdir(ctx: BuildContext, rootfs: Path) -> None:
    cp(rootfs, ctx, ["file"], "./", workdir="/test1/test2")
    cp(rootfs, ctx, ["file"], "./bar/baz", workdir="/test1/test2")
    cp(rootfs, ctx, ["file"], "../", workdir="/test5/test6")
    t = tree_of(rootfs)
    assert t["test1/test2/file"] == "hello"
    assert t["test1/test2/bar/baz"] == "hello"
    assert t["test5/file"] == "hello"


def test_file_goes_into_an_existing_directory(ctx: BuildContext, rootfs: Path) -> None:
    (rootfs / "existing").mkdir()
    cp(rootfs, ctx, ["file"], "/existing")
    cp(rootfs, ctx, ["file"], "/newname")
    assert (rootfs / "existing/file").read_text() == "hello"
    assert (rootfs / "newname").read_text() == "hello"


def test_directory_contents_are_copied_not_the_directory(ctx: BuildContext, rootfs: Path) -> None:
    cp(rootfs, ctx, ["sub"], "/x")
    assert tree_of(rootfs) == {"x": "dir", "x/dir1": "dir", "x/dir1/dir2": "dir", "x/dir1/dir2/foo": "deep"}


def test_empty_directories_are_kept(ctx: BuildContext, rootfs: Path) -> None:
    cp(rootfs, ctx, ["."], "/all/")
    assert (rootfs / "all/empty").is_dir()


def test_multiple_sources_to_one_path_are_copied_in_turn(ctx: BuildContext, rootfs: Path) -> None:
    # as BuildKit (and docker 20.10) do: the last file is what the path holds; a folder
    # first makes the path a folder, and a file after it goes into it
    cp(rootfs, ctx, ["foo.go", "bar.go"], "/notadir")
    assert (rootfs / "notadir").read_text() == "bar-contents"
    cp(rootfs, ctx, ["sub", "foo.go"], "/both")
    assert sorted(os.listdir(rootfs / "both")) == ["dir1", "foo.go"]
    cp(rootfs, ctx, ["foo.go", "bar.go"], "/dir/")
    assert sorted(os.listdir(rootfs / "dir")) == ["bar.go", "foo.go"]


def test_empty_wildcard_copies_nothing(ctx: BuildContext, rootfs: Path) -> None:
    cp(rootfs, ctx, ["file", "nomatch*"], "/")
    assert tree_of(rootfs) == {"file": "hello"}


def test_overwrite_existing_files_and_same_copy_twice(ctx: BuildContext, rootfs: Path) -> None:
    cp(rootfs, ctx, ["sub"], "sub")
    cp(rootfs, ctx, ["sub"], "sub")
    (rootfs / "dest").mkdir()
    (rootfs / "dest/foo.go").write_text("old")
    cp(rootfs, ctx, ["foo.go"], "dest/foo.go")
    assert (rootfs / "dest/foo.go").read_text() == "foo-contents"
    assert (rootfs / "sub/dir1/dir2/foo").read_text() == "deep"


def test_file_onto_directory_is_an_error(ctx: BuildContext, rootfs: Path) -> None:
    (rootfs / "x/dir1").mkdir(parents=True)
    (rootfs / "y").write_text("file")
    cp(rootfs, ctx, ["sub"], "/x")  # dirs merge
    with pytest.raises(ContextError, match="cannot copy to non-directory"):
        cp(rootfs, ctx, ["sub"], "/y")


# ------------------------------------------------------------------ symlinks


def test_top_level_symlink_is_followed_inner_links_kept(tmp_path: Path, rootfs: Path) -> None:
    root = make(tmp_path / "c", {"bar": "bar-contents", "foo": ("link", "bar"), "d/real": "r", "d/l": ("link", "real"),
                                 "d/abs": ("link", "/etc/passwd")})
    c = BuildContext.open(root, None)
    cp(rootfs, c, ["foo"], "/")
    cp(rootfs, c, ["d"], "/d")
    assert (rootfs / "foo").read_text() == "bar-contents" and not (rootfs / "foo").is_symlink()
    assert os.readlink(rootfs / "d/l") == "real"
    assert os.readlink(rootfs / "d/abs") == "/etc/passwd"


def test_copy_through_symlinked_dir_in_context(tmp_path: Path, rootfs: Path) -> None:
    root = make(tmp_path / "c", {"sub/foo": "contents", "link": ("link", "sub")})
    cp(rootfs, BuildContext.open(root, None), ["link/foo"], ".")
    assert (rootfs / "foo").read_text() == "contents"


def test_copy_through_absolute_symlinks_of_a_stage(tmp_path: Path, rootfs: Path) -> None:
    stage = make(tmp_path / "stage", {"out/sub/foo": "data", "sub": ("link", "/out/sub"), "sub2": ("link", "out/sub")})
    t = DirTree(stage, label="stage build")
    cp(rootfs, t, ["/sub/foo"], ".")
    cp(rootfs, t, ["/sub2/foo"], "bar")
    assert (rootfs / "foo").read_text() == "data" and (rootfs / "bar").read_text() == "data"


def test_dest_symlinks_resolve_inside_dest_root(ctx: BuildContext, rootfs: Path) -> None:
    (rootfs / "usr/lib").mkdir(parents=True)
    os.symlink("/usr/lib", rootfs / "lib")
    cp(rootfs, ctx, ["file"], "/lib/")
    assert (rootfs / "usr/lib/file").read_text() == "hello"
    assert (rootfs / "lib").is_symlink()


# ------------------------------------------------------------------ metadata


def test_modes_and_mtimes_are_preserved(tmp_path: Path, rootfs: Path) -> None:
    root = make(tmp_path / "c", {"d/x": "x", "d/s": None})
    os.chmod(root / "d/x", 0o751)
    os.chmod(root / "d/s", 0o700)
    os.utime(root / "d/x", (1000, 123456789))
    os.utime(root / "d/s", (1000, 222222222))
    cp(rootfs, BuildContext.open(root, None), ["d"], "/out")
    assert stat.S_IMODE(os.stat(rootfs / "out/x").st_mode) == 0o751
    assert stat.S_IMODE(os.stat(rootfs / "out/s").st_mode) == 0o700
    assert os.stat(rootfs / "out/x").st_mtime == 123456789
    assert os.stat(rootfs / "out/s").st_mtime == 222222222


def test_created_dest_dir_gets_0755_and_source_dir_times(tmp_path: Path, rootfs: Path) -> None:
    root = make(tmp_path / "c", {"d/x": "x"})
    os.chmod(root / "d", 0o700)
    os.utime(root / "d", (5, 5))
    cp(rootfs, BuildContext.open(root, None), ["d"], "/a/b/out")
    assert stat.S_IMODE(os.stat(rootfs / "a/b/out").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(rootfs / "a").st_mode) == 0o755
    assert os.stat(rootfs / "a/b/out").st_mtime == 5


def test_existing_dest_dir_keeps_its_mode(tmp_path: Path, rootfs: Path) -> None:
    root = make(tmp_path / "c", {"d/x": "x"})
    os.chmod(root / "d", 0o700)
    (rootfs / "out").mkdir(mode=0o750)
    os.chmod(rootfs / "out", 0o750)
    cp(rootfs, BuildContext.open(root, None), ["d"], "/out")
    assert stat.S_IMODE(os.stat(rootfs / "out").st_mode) == 0o750


def test_chmod_octal_applies_to_files_dirs_and_created_parents(tmp_path: Path, rootfs: Path) -> None:
    root = make(tmp_path / "c", {"foo": "f", "bar": "b", "d/inner/x": "x"})
    c = BuildContext.open(root, None)
    cp(rootfs, c, ["foo"], "/foo", chmod=0o644)
    cp(rootfs, c, ["bar"], "/baz", chmod="777")
    cp(rootfs, c, ["foo"], "/foobis", chmod="0")
    cp(rootfs, c, ["foo"], "/parent/foo", chmod="777")
    cp(rootfs, c, ["foo"], "/parent/sub/foo", chmod="770")
    cp(rootfs, c, ["d"], "/dd/", chmod="4755")

    def mode(p: str) -> int:
        return stat.S_IMODE(os.stat(rootfs / p).st_mode)

    assert (mode("foo"), mode("baz"), mode("foobis")) == (0o644, 0o777, 0)
    assert (mode("parent"), mode("parent/sub")) == (0o777, 0o770)
    assert mode("dd/inner") == 0o4755 and mode("dd/inner/x") == 0o4755


@pytest.mark.parametrize("bad", ["64a", "10000", "u+q", "8"])
def test_invalid_chmod(ctx: BuildContext, rootfs: Path, bad: str) -> None:
    with pytest.raises(ContextError, match=r"invalid chmod parameter: '.*'\. it should be octal string and between 0 and 07777"):
        cp(rootfs, ctx, ["file"], "/f", chmod=bad)


@pytest.mark.parametrize(
    "spec,before,is_dir,after",
    [
        ("go-w", 0o666, False, 0o644),
        ("u=rw,g=r,o=r", 0o666, False, 0o644),
        ("a+X", 0o666, False, 0o666),
        ("a+X", 0o124, True, 0o135),
        ("u+rw,g+r,o-x,o+w", 0o124, True, 0o766),
        ("go-w", 0o124, True, 0o104),
        ("u+x", 0o644, False, 0o744),
        ("+x", 0o644, False, 0o755),
        ("u+s", 0o755, False, 0o4755),
        ("g=u", 0o740, False, 0o770),
    ],
)
def test_symbolic_chmod(spec: str, before: int, is_dir: bool, after: int) -> None:
    from builder.copy_mode import parse_chmod

    assert parse_chmod(spec).apply(before, is_dir=is_dir) == after


def test_hard_links_inside_a_source_stay_linked(tmp_path: Path, rootfs: Path) -> None:
    root = make(tmp_path / "c", {"d/a": "x"})
    os.link(root / "d/a", root / "d/b")
    cp(rootfs, BuildContext.open(root, None), ["d"], "/o")
    assert os.stat(rootfs / "o/a").st_ino == os.stat(rootfs / "o/b").st_ino


def test_excludes_apply_below_each_match(tmp_path: Path, rootfs: Path) -> None:
    root = make(tmp_path / "c", {"dir1/a.png": "1", "dir1/b.txt": "2", "dir3/c.mp3": "3", "dir3/d.mpeg": "4",
                                 "dir4/e.txt": "5", "dir4/f.txt": ("link", "e.txt")})
    c = BuildContext.open(root, None)
    cp(rootfs, c, ["."], "/1", excludes=["*/*.png"])
    cp(rootfs, c, ["dir*"], "/4/", excludes=["*.mp3", "*.png", "*.txt"])
    t = tree_of(rootfs)
    assert "1/dir1/a.png" not in t and t["1/dir1/b.txt"] == "2" and t["1/dir4/f.txt"] == "-> e.txt"
    assert [k for k in t if k.startswith("4/")] == ["4/d.mpeg"]


def test_dockerignored_files_are_not_copied(tmp_path: Path, rootfs: Path) -> None:
    root = make(tmp_path / "c", {"src/a.py": "a", "src/__pycache__/a.pyc": "x", "secret": "s"})
    (root / ".dockerignore").write_text("**/__pycache__\nsecret\n")
    cp(rootfs, BuildContext.open(root, None), ["."], "/app/")
    assert sorted(tree_of(rootfs)) == ["app", "app/.dockerignore", "app/src", "app/src/a.py"]


def test_sockets_in_the_context_become_empty_files(tmp_path: Path, rootfs: Path) -> None:
    import socket

    root = make(tmp_path / "c", {"x": "x"})
    s = socket.socket(socket.AF_UNIX)
    s.bind(os.fspath(root / "sock"))
    try:
        cp(rootfs, BuildContext.open(root, None), ["."], "/")
    finally:
        s.close()
    assert stat.S_ISREG(os.lstat(rootfs / "sock").st_mode)


def test_source_date_epoch_sets_every_time(ctx: BuildContext, rootfs: Path) -> None:
    cp(rootfs, ctx, ["sub"], "/a/b/", mtime=1700000000)
    for p in ("a", "a/b", "a/b/dir1", "a/b/dir1/dir2/foo"):
        assert os.lstat(rootfs / p).st_mtime == 1700000000, p


# ------------------------------------------------------------------ owners


@needs_root
def test_context_files_are_owned_by_root_unless_chown(tmp_path: Path, rootfs: Path) -> None:
    root = make(tmp_path / "c", {"d/f": "x", "d/l": ("link", "f")})
    for p in ("d", "d/f"):
        os.chown(root / p, 1234, 5678)
    c = BuildContext.open(root, None)
    cp(rootfs, c, ["d"], "/plain/")
    cp(rootfs, c, ["d"], "/new/parent/", chown=(1000, 1001))
    assert (os.stat(rootfs / "plain/f").st_uid, os.stat(rootfs / "plain/f").st_gid) == (0, 0)
    for p in ("new", "new/parent", "new/parent/f", "new/parent/l"):
        st = os.lstat(rootfs / p)
        assert (st.st_uid, st.st_gid) == (1000, 1001), p


@needs_root
def test_from_stage_keeps_owners_and_existing_dirs(tmp_path: Path, rootfs: Path) -> None:
    """BuildKit's testCopyChownExistingDir."""
    src = make(tmp_path / "src", {"file": "", "dir/subdir/nestedfile": ""})
    os.chown(src / "file", 100, 200)
    os.chown(src / "dir", 100, 200)
    os.chown(src / "dir/subdir", 101, 201)
    os.chown(src / "dir/subdir/nestedfile", 102, 202)
    make(rootfs, {"existingdir/existingsubdir": None, "existingdir/existingfile": ""})
    os.chown(rootfs / "existingdir", 500, 600)
    os.chown(rootfs / "existingdir/existingsubdir", 501, 601)
    t = DirTree(src, label="stage source")
    cp(rootfs, t, ["/file"], ".")
    cp(rootfs, t, ["/dir"], "/dir")
    cp(rootfs, t, ["/dir/."], "/existingdir")

    def owner(p: str) -> tuple[int, int]:
        st = os.lstat(rootfs / p)
        return st.st_uid, st.st_gid

    assert owner("file") == (100, 200)
    assert owner("dir") == (0, 0)
    assert owner("dir/subdir") == (101, 201)
    assert owner("dir/subdir/nestedfile") == (102, 202)
    assert owner("existingdir") == (500, 600)
    assert owner("existingdir/existingsubdir") == (501, 601)
    assert owner("existingdir/subdir") == (101, 201)


@needs_root
def test_xattrs_of_a_stage_are_kept(tmp_path: Path, rootfs: Path) -> None:
    src = make(tmp_path / "src", {"bin": "x"})
    try:
        os.setxattr(src / "bin", "user.pybuild", b"yes")
    except OSError:
        pytest.skip("filesystem without user xattrs")
    cp(rootfs, DirTree(src), ["/bin"], "/bin")
    assert os.getxattr(rootfs / "bin", "user.pybuild") == b"yes"


@needs_root
def test_devices_and_fifos_of_a_stage_are_recreated(tmp_path: Path, rootfs: Path) -> None:
    src = make(tmp_path / "src", {"dev": None})
    os.mknod(src / "dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mkfifo(src / "dev/fifo")
    cp(rootfs, DirTree(src), ["/dev"], "/dev")
    assert stat.S_ISCHR(os.lstat(rootfs / "dev/null").st_mode)
    assert os.lstat(rootfs / "dev/null").st_rdev == os.makedev(1, 3)
    assert stat.S_ISFIFO(os.lstat(rootfs / "dev/fifo").st_mode)


# ------------------------------------------------------------------ --parents and heredocs


def test_parents_keep_paths(tmp_path: Path, rootfs: Path) -> None:
    root = make(tmp_path / "c", {"x/a.txt": "xa", "y/a.txt": "ya", "x/y/a.txt": "xya", "x/y/b.txt": "xyb",
                                 "src/a.txt": "1", "src/x/b.txt": "2", "src/x/y/c.txt": "3", "src/x/y/d.md": "4"})
    c = BuildContext.open(root, None)
    cp(rootfs, c, ["./x/a.txt", "./y/a.txt"], "/no_parents/")
    cp(rootfs, c, ["./x/a.txt", "./y/a.txt"], "/parents/", parents=True)
    cp(rootfs, c, ["./x/./y/*.txt"], "/pivot/", parents=True)
    cp(rootfs, c, ["./src/**/*.txt"], "/deep/", parents=True)
    t = tree_of(rootfs)
    assert t["no_parents/a.txt"] == "ya"
    assert t["parents/x/a.txt"] == "xa" and t["parents/y/a.txt"] == "ya"
    assert {k for k in t if k.startswith("pivot/")} == {"pivot/y", "pivot/y/a.txt", "pivot/y/b.txt"}
    assert {k for k in t if k.startswith("deep/") and k.endswith((".txt", ".md"))} == {
        "deep/src/a.txt", "deep/src/x/b.txt", "deep/src/x/y/c.txt"}


def test_parents_missing_plain_path_is_an_error(ctx: BuildContext, rootfs: Path) -> None:
    with pytest.raises(ContextError, match="not found"):
        cp(rootfs, ctx, ["./nope/x"], "/p/", parents=True)


def test_parents_dirs_take_source_metadata(tmp_path: Path, rootfs: Path) -> None:
    root = make(tmp_path / "c", {"x/y/a": "a"})
    os.chmod(root / "x", 0o711)
    cp(rootfs, BuildContext.open(root, None), ["x/y/a"], "/p/", parents=True)
    assert stat.S_IMODE(os.stat(rootfs / "p/x").st_mode) == 0o711


def test_heredoc_source(rootfs: Path) -> None:
    copy_into(rootfs, [SourceSpec.inline("hello.sh", b"echo hi\n")], "/usr/bin/")
    p = rootfs / "usr/bin/hello.sh"
    assert p.read_bytes() == b"echo hi\n"
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o644
    copy_into(rootfs, [SourceSpec.inline("x", b"1"), SourceSpec.inline("y", b"2")], "/two/")
    assert tree_of(rootfs / "two") == {"x": "1", "y": "2"}
