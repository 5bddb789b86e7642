"""The build context: selecting COPY sources, .dockerignore, walking, checksums."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from builder.context import BuildContext, DirTree, StatCache, clean_source, go_match, resolve_in_root
from builder.errors import ContextError


def make(root: Path, spec: dict[str, object]) -> Path:
    """Create files (str/bytes), dirs (None) and symlinks (("link", target))."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, what in spec.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if what is None:
            p.mkdir(exist_ok=True)
        elif isinstance(what, tuple):
            os.symlink(what[1], p)
        elif isinstance(what, bytes):
            p.write_bytes(what)
        else:
            p.write_text(str(what))
    return root


def ctx(tmp_path: Path, spec: dict[str, object], dockerignore: str | None = None) -> BuildContext:
    root = make(tmp_path / "ctx", spec)
    if dockerignore is not None:
        (root / ".dockerignore").write_text(dockerignore)
    return BuildContext.open(root, root / "Dockerfile")


def rels(matches: list) -> list[str]:
    return [m.rel for m in matches]


# ------------------------------------------------------------------ paths


@pytest.mark.parametrize(
    "given,want",
    [("x", "x"), ("./x", "x"), ("/x", "x"), ("../x", "x"), ("../../a/../b/./c/", "b/c"), (".", ""), ("/", "")],
)
def test_sources_are_cleaned_against_root(given: str, want: str) -> None:
    assert clean_source(given) == want


@pytest.mark.parametrize(
    "pattern,name,ok",
    [
        ("*.go", "foo.go", True),
        ("*.go", "foo.c", False),
        ("f?o", "foo", True),
        ("[a-c]x", "bx", True),
        ("[^a-c]x", "bx", False),
        ("[^a-c]x", "dx", True),
        ("\\*", "*", True),
        ("\\*", "a", False),
        ("[", "[", False),  # a malformed pattern matches nothing
    ],
)
def test_go_filepath_match(pattern: str, name: str, ok: bool) -> None:
    assert go_match(pattern, name) is ok


def test_symlinks_resolve_inside_the_root(tmp_path: Path) -> None:
    root = make(tmp_path / "r", {"sub/f": "x", "abs": ("link", "/sub"), "up": ("link", "../../sub"), "chain": ("link", "abs")})
    assert resolve_in_root(root, "abs/f") == "sub/f"
    assert resolve_in_root(root, "up/f") == "sub/f"
    assert resolve_in_root(root, "chain/f") == "sub/f"
    assert resolve_in_root(root, "chain", follow_final=False) == "chain"
    assert resolve_in_root(root, "missing/../sub") == "sub"


def test_symlink_loop_is_an_error(tmp_path: Path) -> None:
    root = make(tmp_path / "r", {"a": ("link", "b"), "b": ("link", "a")})
    with pytest.raises(ContextError, match="too many levels"):
        resolve_in_root(root, "a")


# ------------------------------------------------------------------ select


def test_select_plain_file_and_dir(tmp_path: Path) -> None:
    c = ctx(tmp_path, {"a.txt": "a", "d/x": "x"})
    [m] = c.select("a.txt")
    assert (m.rel, m.resolved, m.is_dir) == ("a.txt", "a.txt", False)
    [m] = c.select("../../d/")
    assert (m.rel, m.is_dir) == ("d", True)
    [m] = c.select(".")
    assert (m.rel, m.is_dir) == ("", True)


def test_missing_source_names_it(tmp_path: Path) -> None:
    c = ctx(tmp_path, {"a": "a"})
    with pytest.raises(ContextError) as err:
        c.select("nope.txt")
    assert str(err.value) == 'COPY failed: "nope.txt" not found in build context'


def test_ignored_source_is_invisible_and_the_rule_named(tmp_path: Path) -> None:
    c = ctx(tmp_path, {"secret.key": "k", "ok": "o"}, dockerignore="# keys\n*.key\n")
    with pytest.raises(ContextError) as err:
        c.select("secret.key")
    assert 'not found in build context' in str(err.value)
    assert "*.key" in str(err.value)
    assert rels(c.select("*")) == [".dockerignore", "ok"]


def test_wildcards_match_per_component_lexically(tmp_path: Path) -> None:
    c = ctx(tmp_path, {"foo.go": "f", "bar.go": "b", "sub/dir1/dir2/foo": "x", "sub/a.go": "s"})
    assert rels(c.select("*.go")) == ["bar.go", "foo.go"]
    assert rels(c.select("sub/*/dir2/foo")) == ["sub/dir1/dir2/foo"]
    assert rels(c.select("s*")) == ["sub"]  # a matching directory is not searched further
    assert c.select("nomatch*") == []  # BuildKit: an empty wildcard selects nothing, no error
    assert c.select("sub/*.md") == [] and c.select("foo.go/*") == []  # a file walks as nothing


def test_a_wildcard_match_that_is_a_dangling_link_fails_the_copy(tmp_path: Path) -> None:
    # BuildKit checksums each match with its links followed: "/nowhere": not found
    c = ctx(tmp_path, {"a.txt": "a", "b.txt": ("link", "/nowhere"), "d/c.txt": "c"})
    with pytest.raises(ContextError) as err:
        c.select("*.txt")
    assert str(err.value) == ('COPY failed: "b.txt" not found in build context: it leads to '
                              '"/nowhere", and links are followed inside the build context')
    assert rels(c.select("d/*.txt")) == ["d/c.txt"]


@pytest.mark.parametrize("pattern", ["nope/*.txt", "sub/x/*.md", "./nope/../nope/x/*", "gone/*"])
def test_a_wildcard_under_a_missing_folder_is_not_found(tmp_path: Path, pattern: str) -> None:
    # fsutil walks the folder before the wildcard, and a missing one fails the copy (docker
    # 20.10: "lstat .../nope: no such file or directory"), a dangling link to one too
    c = ctx(tmp_path, {"sub/a.go": "s", "gone": ("link", "/nowhere")})
    with pytest.raises(ContextError) as err:
        c.select(pattern)
    assert f'"{pattern}" not found in build context' in str(err.value)


def test_wildcard_after_a_symlinked_prefix(tmp_path: Path) -> None:
    c = ctx(tmp_path, {"real/a1": "1", "real/a2": "2", "link": ("link", "real")})
    ms = c.select("link/a*")
    assert [m.resolved for m in ms] == ["real/a1", "real/a2"]


def test_wildcard_matched_symlinks_are_followed_keeping_their_name(tmp_path: Path) -> None:
    c = ctx(tmp_path, {"sub/l0": ("link", "subfile"), "sub/subfile": "s", "sub/l1": ("link", "second"),
                       "sub/second": ("link", "baz"), "sub/baz": "b", "sub/lfile": "l"})
    ms = {m.rel: m.resolved for m in c.select("sub/l*")}
    assert ms == {"sub/l0": "sub/subfile", "sub/l1": "sub/baz", "sub/lfile": "sub/lfile"}


def test_symlink_out_of_context_resolves_inside(tmp_path: Path) -> None:
    c = ctx(tmp_path, {"etc/passwd": "inside", "p": ("link", "/etc/passwd"), "q": ("link", "../../../etc/passwd")})
    assert c.select("p")[0].resolved == "etc/passwd"
    assert c.select("q")[0].resolved == "etc/passwd"
    d = ctx(tmp_path / "two", {"p": ("link", "/etc/passwd"), "dl": ("link", "../nowhere")})
    with pytest.raises(ContextError) as err:
        d.select("p")
    # the message names the target the link led to, and where it was looked up
    assert str(err.value) == ('COPY failed: "p" not found in build context: it leads to "/etc/passwd", '
                              "and links are followed inside the build context")
    with pytest.raises(ContextError) as err:
        d.select("dl/x")
    assert str(err.value).endswith('"dl/x" not found in build context: it leads to "/nowhere/x", '
                                   "and links are followed inside the build context")


def test_ignored_symlink_is_not_followed(tmp_path: Path) -> None:
    c = ctx(tmp_path, {"real/f": "x", "link": ("link", "real")}, dockerignore="link\n")
    with pytest.raises(ContextError):
        c.select("link/f")


def test_dockerfile_dockerignore_takes_precedence(tmp_path: Path) -> None:
    root = make(tmp_path / "ctx", {"a": "a", "b": "b"})
    (root / ".dockerignore").write_text("a\n")
    df_dir = make(tmp_path / "df", {"app.Dockerfile": "FROM scratch\n", "app.Dockerfile.dockerignore": "b\n"})
    c = BuildContext.open(root, df_dir / "app.Dockerfile")
    assert c.dockerfile_name == "app.Dockerfile"
    assert rels(c.select("a")) == ["a"]
    with pytest.raises(ContextError):
        c.select("b")
    plain = BuildContext.open(root, None)
    with pytest.raises(ContextError):
        plain.select("a")


def visible_top(c: BuildContext) -> list[str]:
    return sorted(m.rel for m in c.select("*"))


def test_an_unreadable_ignore_file_is_no_ignore_file(tmp_path: Path) -> None:
    # BuildKit's dockerui ignores a failed read: a folder .dockerignore excludes nothing,
    # and a folder Dockerfile.dockerignore gives way to the context's .dockerignore.
    root = make(tmp_path / "ctx", {"a": "a", "b": "b", ".dockerignore/x": "a"})
    assert visible_top(BuildContext.open(root, None)) == [".dockerignore", "a", "b"]
    root2 = make(tmp_path / "ctx2", {"a": "a", "b": "b", ".dockerignore": "a\n", "Dockerfile.dockerignore": None})
    assert visible_top(BuildContext.open(root2, root2 / "Dockerfile")) == [".dockerignore", "Dockerfile.dockerignore", "b"]


def test_a_symlinked_ignore_file_resolves_inside_the_context(tmp_path: Path) -> None:
    (tmp_path / "outside").write_text("a\n")
    root = make(tmp_path / "ctx", {"a": "a", "b": "b", "rules": "b\n", ".dockerignore": ("link", "rules")})
    assert visible_top(BuildContext.open(root, None)) == [".dockerignore", "a", "rules"]
    # read through the transferred context, "../outside" is "/outside" there: no file
    root2 = make(tmp_path / "ctx2", {"a": "a", ".dockerignore": ("link", "../outside")})
    c = BuildContext.open(root2, None)
    assert c.ignore is None
    assert rels(c.select("a")) == ["a"]


def test_an_ignore_file_in_another_encoding_matches_the_same_bytes(tmp_path: Path) -> None:
    root = make(tmp_path / "ctx", {"a": "a", ".dockerignore": b"caf\xe9\n"})
    (root / "caf\udce9").write_bytes(b"latin-1 name")
    assert visible_top(BuildContext.open(root, None)) == [".dockerignore", "a"]


def test_an_ignore_file_line_of_64_kib_fails_as_in_docker(tmp_path: Path) -> None:
    ok = make(tmp_path / "ok", {"a": "a", ".dockerignore": b"x" * 65535 + b"\na\n"})
    assert visible_top(BuildContext.open(ok, None)) == [".dockerignore"]
    long = make(tmp_path / "long", {"a": "a", ".dockerignore": b"a\n" + b"x" * 65536})
    with pytest.raises(ContextError, match=r"^.dockerignore line 2 is 65536 bytes long: .*token too long"):
        BuildContext.open(long, None)


@pytest.mark.parametrize("data,bad", [(b"node_modules\t# deps\n", "\t"), (b"a\rb\n", "\r"), (b"ok\n!x\x7f\n", "\x7f")])
def test_a_control_character_inside_a_pattern_fails_as_in_buildkit(tmp_path: Path, data: bytes, bad: str) -> None:
    root = make(tmp_path / "ctx", {"a": "a", ".dockerignore": data})
    with pytest.raises(ContextError) as err:
        BuildContext.open(root, None)
    assert f"holds the control character {bad!r}, which BuildKit cannot send" in str(err.value)


def test_control_characters_pass_when_a_pattern_is_not_ascii(tmp_path: Path) -> None:
    # then BuildKit URL-escapes every pattern, control characters included
    root = make(tmp_path / "ctx", {"a": "a", "x\ty": "t", "é": "e", ".dockerignore": "x\ty\né\n"})
    assert visible_top(BuildContext.open(root, None)) == [".dockerignore", "a"]
    # trimmed ends and comment lines are never sent
    root2 = make(tmp_path / "ctx2", {"a": "a", "b": "b", ".dockerignore": b"#\x01\n\ta\t\r\n"})
    assert visible_top(BuildContext.open(root2, None)) == [".dockerignore", "b"]


def test_negated_rule_keeps_a_file_inside_an_ignored_dir(tmp_path: Path) -> None:
    c = ctx(tmp_path, {"logs/a.log": "a", "logs/keep.log": "k"}, dockerignore="logs\n!logs/keep.log\n")
    [m] = c.select("logs")
    assert [e.rel for e in c.walk(m)] == ["", "keep.log"]
    with pytest.raises(ContextError):
        c.select("logs/a.log")


# ------------------------------------------------------------------ walk


def test_walk_is_sorted_preorder_and_honours_excludes(tmp_path: Path) -> None:
    c = ctx(tmp_path, {"d/b.txt": "b", "d/a.md": "a", "d/z/y.txt": "y", "d/z/w.md": "w", "d/e": None})
    [m] = c.select("d")
    assert [e.rel for e in c.walk(m)] == ["", "a.md", "b.txt", "e", "z", "z/w.md", "z/y.txt"]
    assert [e.rel for e in c.walk(m, excludes=["*.md", "z/*.md"])] == ["", "b.txt", "e", "z", "z/y.txt"]


def test_walk_prunes_ignored_dirs(tmp_path: Path) -> None:
    c = ctx(tmp_path, {"node_modules/x/y": "y", "src/a": "a"}, dockerignore="node_modules\n")
    [m] = c.select(".")
    assert [e.rel for e in c.walk(m)] == ["", ".dockerignore", "src", "src/a"]


def test_walk_20000_files_is_fast(tmp_path: Path) -> None:
    import shutil
    import tempfile

    # Made on tmpfs when there is one: creating 20,000 files on a busy disk is what is slow.
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tmp_path
    root = Path(tempfile.mkdtemp(dir=base, prefix="pybuild-walk-"))
    try:
        for d in range(100):
            os.mkdir(root / f"d{d:03}")
            for f in range(200):
                os.close(os.open(root / f"d{d:03}" / f"f{f:03}", os.O_CREAT | os.O_WRONLY, 0o644))
        _check_fast_walk(root)
    finally:
        shutil.rmtree(root)


def _check_fast_walk(root: Path) -> None:
    c = BuildContext.open(root, None)
    [m] = c.select(".")
    t0 = time.monotonic()
    n = sum(1 for _ in c.walk(m))
    assert n == 1 + 100 + 20000
    assert time.monotonic() - t0 < 5.0


# ------------------------------------------------------------------ checksum


def test_checksum_depends_on_content_mode_names_not_mtime(tmp_path: Path) -> None:
    c = ctx(tmp_path, {"d/a": "one", "d/l": ("link", "a")})
    ms = c.select("d")
    base = c.checksum(ms)
    assert c.checksum(ms) == base
    os.utime(tmp_path / "ctx/d/a", (1, 1))
    assert c.checksum(ms) == base
    (tmp_path / "ctx/d/a").write_text("two")
    changed = c.checksum(ms)
    assert changed != base
    os.chmod(tmp_path / "ctx/d/a", 0o600)
    assert c.checksum(ms) != changed
    mode_changed = c.checksum(ms)
    os.unlink(tmp_path / "ctx/d/l")
    os.symlink("b", tmp_path / "ctx/d/l")
    assert c.checksum(ms) != mode_changed


def test_checksum_only_covers_the_selection(tmp_path: Path) -> None:
    c = ctx(tmp_path, {"a": "a", "b": "b", "d/x": "x", "d/skip.md": "s"})
    ms = c.select("a")
    before = c.checksum(ms)
    before_ex = c.checksum(c.select("d"), excludes=["*.md"])
    (tmp_path / "ctx/b").write_text("changed")
    (tmp_path / "ctx/d/skip.md").write_text("changed")
    assert c.checksum(ms) == before
    assert c.checksum(c.select("d"), excludes=["*.md"]) == before_ex


def test_checksum_names_the_match(tmp_path: Path) -> None:
    c = ctx(tmp_path, {"a": "same", "b": "same"})
    assert c.checksum(c.select("a")) != c.checksum(c.select("b"))


def test_checksum_is_the_documented_canonical_form(tmp_path: Path) -> None:
    import hashlib

    c = ctx(tmp_path, {"f": "hi"})
    os.chmod(tmp_path / "ctx/f", 0o644)
    lines = [
        b"pybuild-source-checksum/v1\n",
        b'["match","f",false]\n',
        b'["","file",420,2,"sha256:' + hashlib.sha256(b"hi").hexdigest().encode() + b'",""]\n',
    ]
    assert str(c.checksum(c.select("f"))) == "sha256:" + hashlib.sha256(b"".join(lines)).hexdigest()


def test_hard_links_are_part_of_the_checksum(tmp_path: Path) -> None:
    c = ctx(tmp_path, {"d/a": "x", "d/b": "x"})
    plain = c.checksum(c.select("d"))
    os.unlink(tmp_path / "ctx/d/b")
    os.link(tmp_path / "ctx/d/a", tmp_path / "ctx/d/b")
    assert c.checksum(c.select("d")) != plain


def test_stat_cache_persists_and_skips_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(StatCache, "RACY_NS", 0)
    c = ctx(tmp_path, {"big": b"x" * 3_000_000})
    store_cache = tmp_path / "cache" / "stat.json"
    first = c.checksum(c.select("big"), stat_cache=store_cache)
    # one file per context folder, beside the name the store gives
    [cache] = (tmp_path / "cache" / "stat.json.d").iterdir()
    other = ctx(tmp_path / "other", {"f": b"x"})
    other.checksum(other.select("f"), stat_cache=store_cache)
    assert len(list((tmp_path / "cache" / "stat.json.d").iterdir())) == 2
    data = json.loads(cache.read_text())
    [(path, entry)] = data["entries"].items()
    assert path.endswith("/big")
    # Tamper with the cached digest: an unchanged file must be trusted, not read again.
    entry[4] = "0" * 64
    cache.write_text(json.dumps(data))
    assert c.checksum(c.select("big"), stat_cache=store_cache) != first
    # A changed file (size differs) is read again.
    (tmp_path / "ctx/big").write_bytes(b"y" * 10)
    c.checksum(c.select("big"), stat_cache=store_cache)
    assert json.loads(cache.read_text())["entries"][path][0] == 10


def test_recent_files_are_not_cached(tmp_path: Path) -> None:
    c = ctx(tmp_path, {"f": "x"})
    cache = tmp_path / "stat.json"
    c.checksum(c.select("f"), stat_cache=cache)
    assert not cache.exists() or json.loads(cache.read_text())["entries"] == {}


def test_dirtree_preserves_owner_and_context_forces_root(tmp_path: Path) -> None:
    t = DirTree(tmp_path, label="stage build")
    assert t.owner is None
    c = ctx(tmp_path, {"a": "a"})
    assert c.owner == (0, 0)
    with pytest.raises(ContextError, match='"/x" not found in stage build'):
        t.select("/x")
