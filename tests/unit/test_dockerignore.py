"""builder.dockerignore: docker's .dockerignore reading and matching, case by case.

The tables follow docker's documentation and the cases moby/patternmatcher is tested with,
restated here as (patterns, path, excluded?)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from builder.dockerignore import IgnoreMatcher, go_clean
from builder.errors import ContextError

SINGLE = [
    # ** in all positions
    ("**", "file", True),
    ("**/", "file", True),
    ("**", "dir/file", True),
    ("**/", "dir/file", True),
    ("**/**", "dir/file", True),
    ("dir/**", "dir/file", True),
    ("dir/**", "dir/dir2/file", True),
    ("dir/**", "dir", False),  # the directory itself is kept (only what is below goes)
    ("dir/**", "dirx/file", False),
    ("**/dir", "dir", True),
    ("**/dir", "dir/file", True),
    ("**/dir", "a/b/dir/file", True),
    ("**/dir2/*", "dir/dir2/file", True),
    ("**/dir2/**", "dir/dir2/dir3/file", True),
    ("**file", "file", True),
    ("**file", "dir/file", True),
    ("**file", "dir/myfile", True),  # "**file" is a plain suffix test in docker
    ("**/file", "dir/file", True),
    ("**/file", "dir/myfile", False),
    ("**file", "dir/dir/file", True),
    ("**/file", "dir/dir/file", True),
    ("**/file*", "dir/dir/file", True),
    ("**/file*", "dir/dir/file.txt", True),
    ("**/file*txt", "dir/dir/file.txt", True),
    ("**/file*.txt", "dir/dir/file.txt", True),
    ("**/file*.txt*", "dir/dir/file.txt", True),
    ("**/**/*.txt", "dir/dir/file.txt", True),
    ("**/**/*.txt2", "dir/dir/file.txt", False),
    ("**/*.txt", "file.txt", True),
    ("**/**/*.txt", "file.txt", True),
    ("a**/*.txt", "a/file.txt", True),
    ("a**/*.txt", "a/dir/file.txt", True),
    ("a**/*.txt", "a/dir/dir/file.txt", True),
    ("a**", "abc/d", True),
    ("**/foo/bar", "foo/bar", True),
    ("**/foo/bar", "dir/foo/bar", True),
    ("**/foo/bar", "dir/dir2/foo/bar", True),
    ("abc/**", "abc", False),
    ("abc/**", "abc/def", True),
    ("abc/**", "abc/def/ghi", True),
    ("**/.foo", ".foo", True),
    ("**/.foo", "bar.foo", False),
    # * and ? stay within one path element
    ("*", "fileutils.go", True),
    ("*.go", "fileutils.go", True),
    ("*.go", "pkg/fileutils.go", False),
    ("*", "abc", True),
    ("*c", "abc", True),
    ("a*", "a", True),
    ("a*", "abc", True),
    ("a*", "ab/c", True),  # the parent "ab" matches
    ("a*/b", "abc/b", True),
    ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("a/*.txt", "a/dir/file.txt", False),
    ("a/*.txt", "a/file.txt", True),
    ("a/*.txt**", "a/file.txt", True),
    ("a?b", "a☺b", True),
    ("a???b", "a☺b", False),
    ("a?b", "a/b", False),
    ("a*b", "a/b", False),
    ("*x", "xxx", True),
    ("abc?def", "abcZdef", True),
    ("abc?def", "abcdef", False),
    # character classes
    ("a[b-d]e", "ae", False),
    ("a[b-d]e", "ace", True),
    ("a[b-d]e", "aae", False),
    ("a[^b-d]e", "aze", True),
    ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True),
    ("a[^a]b", "a☺b", True),
    ("a[^a][^a][^a]b", "a☺b", False),
    ("[a-ζ]*", "α", True),
    ("*[a-ζ]", "A", False),
    ("[\\]a]", "]", True),
    ("[\\-]", "-", True),
    ("[x\\-]", "x", True),
    ("[x\\-]", "-", True),
    ("[x\\-]", "z", False),
    ("[\\-x]", "x", True),
    ("[\\-x]", "-", True),
    ("[\\-x]", "a", False),
    ("[!a]", "!", True),  # ! does not negate a class in Go; only ^ does
    ("[!a]", "b", False),
    ("file[0-9].txt", "file7.txt", True),
    # regex characters are literal
    (".*", ".foo", True),
    (".*", "foo", False),
    ("abc.def", "abcdef", False),
    ("abc.def", "abc.def", True),
    ("abc.def", "abcZdef", False),
    ("a(b)c/def", "a(b)c/def", True),
    ("a(b)c/def", "a(b)c/xyz", False),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
     "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    # escapes
    ("a\\*b", "a*b", True),
    ("a\\*b", "ab", False),
    ("a\\*b", "axb", False),
    ("a\\\\", "a\\", True),
    ("\\#notes", "#notes", True),
    ("\\!important", "!important", True),
    # a pattern matching a directory excludes everything below it
    ("docs", "docs/README.md", True),
    ("docs/", "docs/a/b/c", True),
    ("docs", "docs", True),
    ("docs", "documents", False),
    ("docs", "sub/docs", False),  # patterns are anchored at the context root
    ("*/temp*", "somedir/temporary.txt", True),  # docker's documented examples
    ("*/temp*", "somedir/temp", True),
    ("*/temp*", "temp", False),
    ("*/*/temp*", "somedir/subdir/temporary.txt", True),
    ("temp?", "tempa", True),
    ("temp?", "temp", False),
    ("**/*.go", "a/b/c.go", True),
    # a leading "^" reaches docker's regex unescaped, as an anchor
    ("^foo*", "foobar", True),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), SINGLE)
def test_single_pattern(pattern: str, path: str, expected: bool) -> None:
    assert IgnoreMatcher.from_patterns([pattern]).excluded(path) is expected
    assert IgnoreMatcher.from_text(pattern + "\n").excluded(path) is expected


MULTI = [
    (["!fileutils.go", "*.go"], "fileutils.go", True),
    (["*.go", "!fileutils.go"], "fileutils.go", False),
    (["docs", "!docs/README.md"], "docs/README.md", False),
    (["docs", "!docs/README.md"], "docs/other.md", True),
    (["docs/", "!docs/README.md"], "docs/README.md", False),
    (["docs/*", "!docs/README.md"], "docs/README.md", False),
    (["**", "!util/docker/web"], "util/docker/web/foo", False),
    (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", True),
    (["**", "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"],
     "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", False),
    (["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", False),
    # docker's documented exception examples
    (["*.md", "!README.md"], "README.md", False),
    (["*.md", "!README.md"], "CHANGES.md", True),
    (["*.md", "!README*.md", "README-secret.md"], "README-secret.md", True),
    (["*.md", "!README*.md", "README-secret.md"], "README-public.md", False),
    (["*.md", "README-secret.md", "!README*.md"], "README-secret.md", False),
    # last match wins, repeatedly
    (["a", "!a/b", "a/b/c"], "a/b/c/d", True),
    (["a", "!a/b", "a/b/c"], "a/b/x", False),
    (["a", "!a/b", "a/b/c"], "a/x", True),
    # BuildKit's walk carries each rule's result down from the parents; a rule skipped at
    # a parent (it could not change the answer there) is not looked at for it again, so
    # "!a" does not bring back a/b although "a" is an ancestor
    (["a/b", "!a"], "a/b", True),
    (["a/b", "!a"], "a/b/c", True),
    (["a/b", "!a"], "a/c", False),
    (["!a", "a"], "a/x", True),
]


@pytest.mark.parametrize(("patterns", "path", "expected"), MULTI)
def test_pattern_lists(patterns: list[str], path: str, expected: bool) -> None:
    assert IgnoreMatcher.from_patterns(patterns).excluded(path) is expected
    assert IgnoreMatcher.from_text("\n".join(patterns)).excluded(path) is expected


def test_reading_the_file() -> None:
    text = (
        "\ufefftest1\r\n"
        "/test2\n"
        "/a/file/here\n"
        "\n"
        "lastfile\n"
        "# this is a comment\n"
        "! /inverted/abs/path\n"
        "   # not a comment: only a # in the first column starts one\n"
        "\t./dot/../cleaned//path/  \n"
        "/\n"
    )
    m = IgnoreMatcher.from_text(text)
    got = [("!" if r.exclusion else "") + r.pattern for r in m.rules]
    assert got == [
        "test1", "test2", "a/file/here", "lastfile", "!inverted/abs/path",
        "# not a comment: only a # in the first column starts one", "cleaned/path", "/",
    ]
    assert [r.line for r in m.rules] == [1, 2, 3, 5, 7, 8, 9, 10]
    assert m.rules[6].text == "./dot/../cleaned//path/"
    assert m.excluded("test2") and m.excluded("a/file/here/x") and m.excluded("cleaned/path")
    assert m.excluded("# not a comment: only a # in the first column starts one")
    assert not m.excluded("inverted/abs/path")


def test_leading_slash_is_dropped_only_when_reading_the_file() -> None:
    assert IgnoreMatcher.from_text("/abs\n").excluded("abs")
    # COPY --exclude patterns go to the matcher as written (cleaned, but still absolute)
    assert not IgnoreMatcher.from_patterns(["/abs"]).excluded("abs")
    assert IgnoreMatcher.from_patterns(["  ./x/  "]).excluded("x/y")


def test_empty_and_root() -> None:
    assert not IgnoreMatcher.from_text("").excluded("anything")
    assert not IgnoreMatcher.from_text("# only a comment\n\n").excluded("a")
    m = IgnoreMatcher.from_patterns(["**"])
    assert not m.excluded(".") and not m.excluded("") and not m.excluded("./")
    assert m.excluded("./a") and m.excluded("/a")  # paths are cleaned first


def test_is_dir_does_not_change_the_answer() -> None:
    m = IgnoreMatcher.from_text("build/\n")
    assert m.excluded("build", is_dir=True) and m.excluded("build", is_dir=False)


def test_rule_for_names_the_rule_and_its_line() -> None:
    m = IgnoreMatcher.from_text("# header\n\nnode_modules\nx*\n!xkeep\n  *.log  \n")
    assert m.rule_for("xa") == "x*"
    assert m.rule_for("xkeep") is None
    assert m.rule_for("src/main.py") is None
    assert m.rule_for("node_modules/a/b.js") == "node_modules"
    assert m.rule_for("err.log") == "*.log"
    rule = m.matching_rule("xa")
    assert rule is not None and rule.line == 4
    assert rule.describe() == 'excluded by .dockerignore rule "x*" on line 4'
    assert f'"xa" not found in build context ({rule.describe()})' == (
        '"xa" not found in build context (excluded by .dockerignore rule "x*" on line 4)')
    other = IgnoreMatcher.from_patterns(["*.tmp"]).matching_rule("a.tmp")
    assert other is not None and other.line is None
    assert other.describe() == 'excluded by pattern "*.tmp"'


def test_rule_for_after_several_matches_is_the_last_one() -> None:
    m = IgnoreMatcher.from_patterns(["a", "!a/b", "a/b/c"])
    assert m.rule_for("a/b/c/d") == "a/b/c"
    assert m.rule_for("a/x") == "a"


@pytest.mark.parametrize(
    ("patterns", "directory", "expected"),
    [
        (["node_modules"], "node_modules", True),
        (["node_modules"], "src", False),  # not excluded at all
        (["**"], "anything", True),
        (["a", "!a/keep"], "a", False),  # an exception lies below
        (["a", "!a/keep"], "a/other", True),
        (["a", "!a/keep"], "a/keep", False),  # not excluded
        (["a", "!a/keep/**"], "a", False),  # trailing /** is read as the directory
        (["a", "!a/keep/*"], "a/x", True),
        (["a", "!b"], "a", True),
        (["a", "!*.md"], "a", False),  # a glob exception could match anywhere: walk on
        (["a", "!a/[kK]eep"], "a/x", False),
        (["dir/**"], "dir", False),  # dir itself is kept
        (["dir/**"], "dir/sub", True),
    ],
)
def test_can_skip_dir(patterns: list[str], directory: str, expected: bool) -> None:
    assert IgnoreMatcher.from_patterns(patterns).can_skip_dir(directory) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ok\n[\n", '.dockerignore line 2: bad pattern "[": syntax error in pattern'),
        ("!\n", '.dockerignore line 1: illegal exclusion pattern: "!"'),
        ("  !  \n", "illegal exclusion pattern"),
        ("!/\n", "illegal exclusion pattern"),
        ("a\\\n", "syntax error in pattern"),
        ("[]a]\n", "syntax error in pattern"),
        ("[-]\n", "syntax error in pattern"),
        ("[x-]\n", "syntax error in pattern"),
        ("[-x]\n", "syntax error in pattern"),
        ("[a-b-c]\n", "syntax error in pattern"),
        ("[^\n", "syntax error in pattern"),
        ("[^bc\n", "syntax error in pattern"),
        ("a[\n", "syntax error in pattern"),
        ("*[\n", "syntax error in pattern"),
        ("ok/*/[z-a]\n", "invalid character class range z-a"),
        ("[Local-Only]/\n", "invalid character class range"),  # docker fails on it later
        ("a\\qb\n", "unsupported escape"),
    ],
)
def test_bad_patterns(text: str, message: str) -> None:
    with pytest.raises(ContextError) as info:
        IgnoreMatcher.from_text(text)
    assert message in str(info.value)


def test_bad_pattern_from_a_list_names_no_line() -> None:
    with pytest.raises(ContextError, match='^bad pattern "\\[": syntax error in pattern$'):
        IgnoreMatcher.from_patterns(["["])


@pytest.mark.parametrize(
    ("path", "cleaned"),
    [("", "."), (".", "."), ("a/./b", "a/b"), ("a//b/", "a/b"), ("a/../..", ".."),
     ("/../a", "/a"), ("/", "/"), ("//a", "/a"), ("a/b/../c", "a/c"), ("../../x", "../../x")],
)
def test_go_clean(path: str, cleaned: str) -> None:
    assert go_clean(path) == cleaned


def test_deep_paths_are_fine() -> None:
    m = IgnoreMatcher.from_patterns(["a", "!a/b"])
    deep = "a/b/" + "/".join(["d"] * 3000)
    assert not m.excluded(deep)
    assert m.excluded("a/c/" + "/".join(["d"] * 3000))


_NAME = st.text(alphabet="ab.-_x", min_size=1, max_size=4).filter(lambda s: s not in (".", ".."))
_PATH = st.lists(_NAME, min_size=1, max_size=4).map("/".join)


@given(path=_PATH)
def test_a_literal_path_excludes_itself_and_below(path: str) -> None:
    m = IgnoreMatcher.from_patterns([path])
    assert m.excluded(path) and m.excluded(path + "/x/y")
    assert not IgnoreMatcher.from_patterns([path, "!" + path]).excluded(path)


@given(patterns=st.lists(st.sampled_from(["a", "!a/b", "a/*", "!**/c", "*/b/*", "b", "!b/a"]),
                         max_size=5),
       path=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=4).map("/".join))
def test_skippable_directory_has_nothing_included_below(patterns: list[str], path: str) -> None:
    # can_skip_dir is the walk's pruning: it must never hide a path docker would send.
    m = IgnoreMatcher.from_patterns(patterns)
    if m.can_skip_dir(path):
        for child in ("a", "b", "c", "a/b", "b/c", "c/a/b"):
            assert m.excluded(f"{path}/{child}")
