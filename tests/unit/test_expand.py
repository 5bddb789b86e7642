"""builder.expand beyond the golden files: pattern operators, the backtick escape token,
error messages, the names a word used, heredoc bodies, word splitting, and properties."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.errors import ExpandError
from builder.expand import expand_heredoc, expand_shown, expand_word, expand_words

# (word, env, expected) -- many adapted from the cases BuildKit's lexer is tested with.
PATTERN_CASES = [
    # ${v#p}: shortest prefix, ${v##p}: longest prefix
    ("${FOO#*x*y}", {"FOO": "xxyy"}, "y"),
    ("${FOO#*}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO#}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO##}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO##*x}", {"FOO": "xxyy"}, "yy"),
    ("${FOO#x}", {"FOO": "xxyy"}, "xyy"),
    ("${FOO#y}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": "x"}, "xyy"),
    ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy"),
    ("${FOO#?\\?}", {"FOO": "???y"}, "?y"),
    ("${FOO##*/}", {"FOO": "/usr/local/bin/tool"}, "tool"),
    ("${FOO#*/}", {"FOO": "usr/local/bin"}, "local/bin"),
    # regex metacharacters are literal in patterns; \} protects the closing brace
    ("${FOO#()[]{\\}^$.\\*\\?|\\\\}", {"FOO": "()[]{}^$.*?|\\x"}, "x"),
    # brackets are literal characters in BuildKit, not classes
    ("${FOO#[ab]}", {"FOO": "[ab]c"}, "c"),
    ("${FOO#[ab]}", {"FOO": "ac"}, "ac"),
    # ${v%p}: shortest suffix, ${v%%p}: longest suffix
    ("${FOO%}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO%y}", {"FOO": "xxyy"}, "xxy"),
    ("${FOO%%y*}", {"FOO": "xxyy"}, "xx"),
    ("${FOO%y*}", {"FOO": "xxyy"}, "xxy"),
    ("${FOO%%\\**}", {"FOO": "xx**"}, "xx"),
    ("${FOO%%\\**\\*}", {"FOO": "a***yy*"}, "a"),
    ("${FOO%%$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy"),
    ("${FOO%.*}", {"FOO": "archive.tar.gz"}, "archive.tar"),
    ("${FOO%%.*}", {"FOO": "archive.tar.gz"}, "archive"),
    ("${FOO%?}", {"FOO": "한국어"}, "한국"),
    ("${ABC:-.}${FOO%x}${ABC:-.}", {"FOO": "xxyy"}, ".xxyy."),
    # unset variables: the operators give the empty string
    ("${NOPE#x}", {}, ""),
    ("${NOPE%x}", {}, ""),
    # ${v/p/r}: first match, ${v//p/r}: all matches; * is greedy
    ("${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}", {"FOO": "/foo*/*/*.txt", "NEEDLE": "\\*/"},
     "/foo.*/*.txt - /foo..*.txt"),
    ("${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}", {"FOO": "/tmp/tmp/bar.txt", "NEEDLE": "/tmp"},
     "/tmp/bar.txt - /bar.txt"),
    ("${FOO/$NEEDLE/$REPL} - ${FOO//$NEEDLE/$REPL}",
     {"FOO": "/a/foo/b/c.txt", "NEEDLE": "/?/", "REPL": "/"}, "/foo/b/c.txt - /foo/c.txt"),
    ("${FOO/$NEEDLE/$REPL}", {"FOO": "http://google.de", "NEEDLE": "http://", "REPL": "https://"},
     "https://google.de"),
    ("${FOO//\\//\\/}", {"FOO": "/tmp/foo.txt"}, "\\/tmp\\/foo.txt"),
    ("${FOO/x*/-}", {"FOO": "axbxc"}, "a-"),
    ("${FOO/b/X}", {"FOO": "abcabc"}, "aXcabc"),
    ("${FOO//b/X}", {"FOO": "abcabc"}, "aXcaXc"),
    ("${FOO/$BAR/ww}", {"FOO": "xxyy", "BAR": ""}, "wwxxyy"),
    ("${FOO///}", {"FOO": "xxyy"}, "xxyy"),
    ("${FOO///}", {}, ""),
    # Go's replace-all: the empty match right after a match is not replaced again
    ("${FOO//*/-}", {"FOO": "ab"}, "-"),
    ("${FOO//*/-}", {"FOO": ""}, "-"),
    ("${FOO///-}", {"FOO": "ab"}, "-a-b-"),
    # replace-all expands a Go template in the replacement: $0 is the match, $$ a dollar
    ("${FOO//b/$R}", {"FOO": "abcb", "R": "<$0|$$|$x|${0}|$>|${x"},
     "a<b|$||b|$>|${xc<b|$||b|$>|${x"),
    # ... replacing the first match only does not
    ("${FOO/b/$R}", {"FOO": "abcb", "R": "<$0>"}, "a<$0>cb"),
]


@pytest.mark.parametrize(("word", "env", "expected"), PATTERN_CASES)
def test_pattern_operators(word: str, env: dict[str, str], expected: str) -> None:
    assert expand_word(word, env) == expected


@pytest.mark.parametrize(
    ("word", "env", "expected"),
    [
        ("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", {"FOO": "xxx", "BAR": ""}, "xxx  ccc"),
        ("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", {"FOO": "xxx", "BAR": ""}, "xxx bbb ccc"),
        ("${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}", {"FOO": "xxx", "BAR": ""}, "aaa bbb "),
        ("${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}", {"FOO": "xxx", "BAR": ""}, "aaa  "),
        ("${FOO?aaa}", {"FOO": "xxx"}, "xxx"),
        ("${BAR?bbb}", {"BAR": ""}, ""),
        ("${VAR:?message here$ARG}", {"VAR": "plain", "ARG": "x"}, "plain"),
        ("${VAR?message here$ARG}", {"VAR": "", "ARG": "x"}, ""),
        ("something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tgz",
         {"VERSION": "v1.2.3", "TARGETOS": "linux", "TARGETARCH": "arm", "TARGETVARIANT": "v7"},
         "something-v1.2.3.linux-arm-v7.tgz"),
        ("$é${ñ_1}", {"é": "e", "ñ_1": "n"}, "en"),  # names are Unicode letters and digits
        ("$١٢x", {"١٢": "d"}, "dx"),  # a name of (Arabic-Indic) decimal digits
        ("\ufeff$A", {"A": "1"}, "1"),  # a leading byte-order mark is dropped, as Go's scanner does
        ("a<<b", {}, "a<<b"),
    ],
)
def test_modifiers(word: str, env: dict[str, str], expected: str) -> None:
    assert expand_word(word, env) == expected


@pytest.mark.parametrize(
    ("word", "env", "expected"),
    [
        ("he`$PWD", {"PWD": "/home"}, "he$PWD"),
        ("C:\\path\\$X", {"X": "x"}, "C:\\path\\x"),  # a backslash is an ordinary character
        ('"a`"b"', {}, 'a"b'),
        ('"a\\"', {}, "a\\"),
        ('"``"', {}, "`"),
        ('"`x"', {}, "`x"),
        ("a``b", {}, "a`b"),
        ("a`", {}, "a"),
        ("${X:-`}}", {}, "}"),
        # patterns always escape with a backslash; the backtick is kept and literal there
        ("${FOO%%`*}", {"FOO": "a`bc"}, "a"),
        ("${FOO#\\*}", {"FOO": "*x"}, "x"),
    ],
)
def test_backtick_escape_token(word: str, env: dict[str, str], expected: str) -> None:
    assert expand_word(word, env, escape="`") == expected


@pytest.mark.parametrize(
    ("word", "env", "message"),
    [
        ("${v:?msg}", {}, 'failed to process "${v:?msg}": v: msg'),
        ("${v?}", {}, "v: is not allowed to be unset"),
        ("${v:?}", {}, "v: is not allowed to be unset"),
        ("${v:?}", {"v": ""}, "v: is not allowed to be empty"),
        ("${VAR:?message here$ARG}", {"VAR": "", "ARG": "x"}, "VAR: message herex"),
        ("${VAR?message here$ARG}", {"ARG": "x"}, "VAR: message herex"),
        ("${v:=w}", {}, "unsupported modifier (:=) in substitution"),
        ("${v=w}", {"v": "x"}, "unsupported modifier (=) in substitution"),
        ("${FOO=:aaa}", {"FOO": "x"}, "unsupported modifier (=) in substitution"),
        ("${v:#x}", {"v": "x"}, "unsupported modifier (:#) in substitution"),
        ("${v:%x}", {"v": "x"}, "unsupported modifier (:%) in substitution"),
        ("${#v}", {"v": "x"}, "unsupported modifier (v) in substitution"),
        ("${v", {}, "syntax error: missing '}'"),
        ("${", {}, "syntax error: missing '}'"),
        ("${v:-x", {}, "syntax error: missing '}'"),
        ("${v:", {}, "syntax error: missing '}'"),
        ("${}", {}, "syntax error: bad substitution"),
        ("${:-x}", {}, "syntax error: bad substitution"),
        ("${{v}", {}, "syntax error: bad substitution"),
        ("'abc", {}, "unexpected end of statement while looking for matching single-quote"),
        ('"abc', {}, ('failed to process "\\"abc": unexpected end of statement while looking '
                      "for matching double-quote")),
        ("${v:-'x}", {}, "single-quote"),
        ("${FOO//ww}", {"FOO": "x"}, "syntax error: missing '/' in ${}"),
        ("${FOO//}", {"FOO": "x"}, "syntax error: missing '/' in ${}"),
        ("${FOO/a/b", {"FOO": "x"}, "syntax error: missing '}'"),
        ("${FOO#\\x}", {"FOO": "x"}, "invalid pattern (\\x) in substitution: invalid escape '\\x'"),
        ("${FOO/\\x/}", {"FOO": "x"}, "invalid pattern (\\x) in substitution"),
        ("${FOO#$P}", {"FOO": "x", "P": "a\\"}, "invalid pattern (a\\) in substitution"),
        ("a\tb${", {}, 'failed to process "a\\tb${"'),
    ],
)
def test_errors(word: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ExpandError) as info:
        expand_word(word, env)
    assert message in info.value.message
    assert info.value.location is None  # the caller adds the Dockerfile line


def test_error_also_in_words_mode() -> None:
    with pytest.raises(ExpandError, match="v: is not allowed to be unset"):
        expand_words("a ${v?}", {})


def test_bad_escape_token_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        expand_word("x", {}, escape="!")


@pytest.mark.parametrize(
    ("word", "env", "names"),
    [
        ("x", {"DUMMY": "d"}, set()),
        ("x ${UNUSED}", {}, {"UNUSED"}),
        ("x ${FOO}", {"FOO": "y"}, {"FOO"}),
        ("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", {"FOO": "1"}, {"FOO", "BAR", "BAZ"}),
        ("${FOO:-$BAR}", {"FOO": "set"}, {"FOO", "BAR"}),  # the operand is always expanded
        ("${FOO#$BAR}", {}, {"FOO", "BAR"}),
        ("${FOO/$N/$R}", {}, {"FOO", "N", "R"}),
        ("'$QUOTED' \\$ESCAPED", {}, set()),
        ('"$DQ"', {}, {"DQ"}),
        ("$1 $@", {}, {"1", "@"}),
        ("$ $. ${X:?}", {"X": "v"}, {"X"}),
    ],
)
def test_used(word: str, env: dict[str, str], names: set[str]) -> None:
    used: set[str] = {"ALREADY"}
    expand_word(word, env, used=used)
    assert used == names | {"ALREADY"}
    used2: set[str] = set()
    expand_words(word, env, used=used2)
    assert used2 == names


def test_used_is_filled_before_an_error() -> None:
    used: set[str] = set()
    with pytest.raises(ExpandError):
        expand_word("$A ${B:?}", {}, used=used)
    assert used == {"A", "B"}


@pytest.mark.parametrize(
    ("word", "env", "expected"),
    [
        ("EXPOSE 80 443", {}, ["EXPOSE", "80", "443"]),
        ("  a \t b  ", {}, ["a", "b"]),
        ("$P/tcp", {"P": "80 81"}, ["80", "81/tcp"]),
        ('"$P"/tcp', {"P": "80 81"}, ["80 81/tcp"]),
        ("a${P}b", {"P": " "}, ["a", "b"]),
        ('"" a', {}, ["a"]),  # an empty quoted string does not make a word (as in BuildKit)
        ("''", {}, []),
        ("", {}, []),
        ("a << EOF", {}, ["a", "<< EOF"]),  # ``<<`` keeps its blanks with the heredoc word
        ("a\\ b", {}, ["a b"]),
        ("x${v:-y} z", {}, ["xy", "z"]),  # see the module docstring: BuildKit >= 0.15 gives y
        ("$S", {"S": "a\u00a0b\u3000c"}, ["a", "b", "c"]),  # Unicode blanks split (Go's IsSpace)
        ("$S", {"S": "a\x1cb"}, ["a\x1cb"]),  # ... but not the ASCII separators Python calls space
        ("a\u00a0b", {}, ["a", "b"]),
    ],
)
def test_words(word: str, env: dict[str, str], expected: list[str]) -> None:
    assert expand_words(word, env) == expected


def test_words_with_backtick_escape() -> None:
    assert expand_words("a` b c\\ d", {}, escape="`") == ["a b", "c\\", "d"]


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ('echo "$A" \'$B\'\n', {"A": "1"}, "echo \"1\" ''\n"),  # quotes are kept, not special
        ("cost: \\$5 and ${A:-x}\n", {}, "cost: $5 and x\n"),
        ("no expansion here\n", {}, "no expansion here\n"),
        ("a\\nb\n", {}, "anb\n"),  # BuildKit processes every \ escape in a heredoc body
        ("${A:+'q'}", {"A": "1"}, "'q'"),
    ],
)
def test_heredoc(text: str, env: dict[str, str], expected: str) -> None:
    assert expand_heredoc(text, env) == expected


def test_heredoc_ignores_the_dockerfile_escape_token_and_reports_errors() -> None:
    used: set[str] = set()
    assert expand_heredoc("`$A", {"A": "1"}, used=used) == "`1"
    assert used == {"A"}
    with pytest.raises(ExpandError, match="H: is not allowed to be unset"):
        expand_heredoc("line\n${H?}\n", {})


# -- properties -----------------------------------------------------------------------
_ALPHABET = st.sampled_from(list("ab_1 $\\`'\"{}:-+?#%/*<.\t\u00a0é"))
_SHELLISH = st.lists(_ALPHABET, max_size=30).map("".join)
_ENV = st.dictionaries(st.sampled_from(["a", "b", "_1", "1", "é"]), _SHELLISH, max_size=4)


@settings(max_examples=150, deadline=None)
@given(word=st.one_of(_SHELLISH, st.text(max_size=30)), env=_ENV,
       escape=st.sampled_from(["\\", "`"]))
def test_only_expand_errors_escape(word: str, env: dict[str, str], escape: str) -> None:
    for fn in (expand_word, expand_words):
        try:
            fn(word, env, escape=escape)
        except ExpandError:
            pass
    try:
        expand_heredoc(word, env)
    except ExpandError:
        pass


@given(word=st.text(max_size=40).filter(
    lambda w: not any(c in w for c in "$'\"\\") and not w.startswith("\ufeff")))
def test_plain_word_is_unchanged(word: str) -> None:
    assert expand_word(word, {"a": "x"}) == word
    assert expand_heredoc(word, {"a": "x"}) == word


@given(body=st.text(max_size=40).filter(lambda w: "'" not in w))
def test_single_quotes_keep_everything(body: str) -> None:
    assert expand_word(f"'{body}'", {"a": "x"}) == body


@given(value=st.text(max_size=30), escape=st.sampled_from(["\\", "`"]))
def test_quoted_variable_is_its_value(value: str, escape: str) -> None:
    assert expand_word('"$V"', {"V": value}, escape=escape) == value
    assert expand_words('"${V}"', {"V": value}, escape=escape) == ([value] if value else [])


@pytest.mark.parametrize("text, raw, shown", [
    # docker 20.10's name for this RUN, checked: quotes kept, \$ unescaped, unset left alone
    ("RUN echo \"a b\" '$V' \\$V $V ${U:-dflt}", True, "RUN echo \"a b\" '$V' $V vv ${U:-dflt}"),
    ("RUN echo ${V:-x} ${U} $U ${U/a/b} ${U//a/b} ${V##v} ${U?no}", True,
     "RUN echo vv ${U} $U ${U/a/b} ${U/a/b} v ${U?no}"),
    ("RUN echo ${", True, "RUN echo ${"),  # does not expand: shown as written
    ("COPY --from=build \"/a b\" /x$V${U}", False, "COPY --from=build /a b /xvv"),  # as ProcessWord
    ("RUN true", True, "RUN true"),
])
def test_a_steps_shown_text_is_expanded_as_buildkit_names_it(text: str, raw: bool, shown: str) -> None:
    assert expand_shown(text, {"V": "vv"}, raw=raw) == shown
