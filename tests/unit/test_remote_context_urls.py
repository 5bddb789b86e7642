"""Which context arguments are git repositories, remote files or folders, and what a git
reference asks for: the cases of BuildKit's dfgitutil git_ref_test.go, as pybuild reads them."""
from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import ContextError
from builder.gitsource import GitRef, is_git_ref, is_transient, parse_git_ref, redact
from builder.remotecontext import RemoteContext, context_kind, dockerfile_in


@pytest.mark.parametrize(
    ("arg", "kind"),
    [
        ("https://example.com/", "http"),
        ("https://example.com/foo", "http"),
        ("https://example.com/foo.git", "git"),
        ("https://example.com/foo.git#deadbeef", "git"),
        ("https://example.com/foo.git#release/1.2", "git"),
        ("https://example.com/foo.git/", "http"),
        ("https://example.com/foo.git.bar", "http"),
        ("http://github.com/docker/docker.git:#branch", "http"),
        ("https://example.com/ctx.tar.gz", "http"),
        ("HTTPS://example.com/Dockerfile", "http"),
        ("git://example.com/foo", "git"),
        ("ssh://git@example.com/foo", "git"),
        ("github.com/moby/buildkit", "git"),
        ("github.com/moby/buildkit#master", "git"),
        ("custom.xyz/moby/buildkit.git", "local"),
        ("https://github.com/moby/buildkit", "http"),
        ("https://foo:bar@github.com/moby/buildkit.git", "git"),
        ("git@github.com:moby/buildkit", "git"),
        ("git@bitbucket.org:atlassianlabs/atlassian-docker.git", "git"),
        ("https://github.com/docker/docker.git?ref=v1.0.0&subdir=/subdir", "git"),
        ("ftp://example.com/ctx.tar", "local"),
        ("./.git", "local"),
        (".git", "local"),
        ("-", "stdin"),
    ],
)
def test_context_kind_as_buildx_sorts_it(arg: str, kind: str) -> None:
    assert context_kind(arg) == kind


def test_a_folder_wins_over_the_github_shorthand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "github.com/moby/buildkit").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert context_kind("github.com/moby/buildkit") == "local"  # buildx: IsLocalDir first


def test_the_github_shorthand_is_a_context_only() -> None:
    # ADD github.com/x/y copies a path: only a build context takes the shorthand
    assert not is_git_ref("github.com/moby/buildkit")
    assert is_git_ref("github.com/moby/buildkit", context=True)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("https://github.com/foo/bar.git#baz/qux:quux/quuz",
         GitRef("https://github.com/foo/bar.git", "baz/qux", "quux/quuz")),
        ("https://github.com/docker/docker.git#:myfolder",
         GitRef("https://github.com/docker/docker.git", "", "myfolder")),
        ("https://github.com/docker/docker.git#main:a/../b/./c/",
         GitRef("https://github.com/docker/docker.git", "main", "b/c")),
        ("https://github.com/moby/buildkit.git?subdir=/subdir#v1.0.0",
         GitRef("https://github.com/moby/buildkit.git", "v1.0.0", "subdir")),
        ("https://github.com/moby/buildkit.git?tag=v1.0.0",
         GitRef("https://github.com/moby/buildkit.git", "refs/tags/v1.0.0")),
        ("https://github.com/moby/buildkit.git?branch=v1.0",
         GitRef("https://github.com/moby/buildkit.git", "refs/heads/v1.0")),
        ("github.com/moby/buildkit?tag=v1.0.0",
         GitRef("https://github.com/moby/buildkit", "refs/tags/v1.0.0")),
        ("git@github.com:moby/buildkit.git?subdir=/subdir#v1.0.0",
         GitRef("git@github.com:moby/buildkit.git", "v1.0.0", "subdir")),
        ("https://h/r.git?keep-git-dir&submodules=false&checksum=abc&mtime=commit",
         GitRef("https://h/r.git", checksum="abc", keep_git_dir=True, submodules=False, mtime="commit")),
    ],
)
def test_parse_git_ref(ref: str, expected: GitRef) -> None:
    assert parse_git_ref(ref) == expected


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("https://github.com/moby/buildkit.git?ref=v1.0.0#v1.2.3", "ref conflicts"),
        ("https://github.com/moby/buildkit.git?ref=v1.0.0&tag=v1.2.3", "ref conflicts"),
        ("https://github.com/moby/buildkit.git?tag=v1.0.0&branch=v1.0", "branch conflicts with tag"),
        ("https://h/r.git?subdir=a#:b", "subdir conflicts"),
        ("https://h/r.git?ref=", "query 'ref' has no value"),
        ("https://h/r.git?ref=a&ref=b", "query 'ref' has multiple values"),
        ("https://h/r.git?keep-git-dir=maybe", "invalid keep-git-dir value"),
        ("https://h/r.git?mtime=now", "invalid mtime value"),
        ("https://h/r.git?bogus=1", "unexpected query 'bogus'"),
    ],
)
def test_parse_git_ref_refuses_what_buildkit_refuses(ref: str, message: str) -> None:
    with pytest.raises(ContextError, match=message):
        parse_git_ref(ref)


def test_messages_never_show_a_password() -> None:
    assert redact("https://foo:bar@h/r.git") == "https://foo:xxxxx@h/r.git"
    assert redact("https://h/r.git") == "https://h/r.git"
    assert redact("git@h:r.git") == "git@h:r.git"


def _remote(root: Path, kind: str = "git") -> RemoteContext:
    return RemoteContext(root, kind, "https://h/r.git", commit="a" * 40)


def test_dockerfile_flag_names_a_file_inside_the_remote_context(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/Dockerfile.dev").write_text("FROM scratch\n")
    (tmp_path / "dockerfile").write_text("FROM scratch\n")
    remote = _remote(tmp_path)
    assert dockerfile_in(remote, "sub/Dockerfile.dev") == str(tmp_path / "sub/Dockerfile.dev")
    assert dockerfile_in(remote, "../../sub/Dockerfile.dev") == str(tmp_path / "sub/Dockerfile.dev")
    assert dockerfile_in(remote, None) == str(tmp_path / "dockerfile")  # dockerui's lower-case fallback
    assert dockerfile_in(remote, "/abs/Dockerfile") == "/abs/Dockerfile"  # buildx: a local file
    assert dockerfile_in(remote, "-") == "-"
    with pytest.raises(ContextError, match=r"^failed to read the Dockerfile: nope not found in the "
                                           r"git repository https://h/r.git at aaaaaaaaaaaa$"):
        dockerfile_in(remote, "nope")


def test_a_plain_remote_file_is_the_dockerfile_whatever_f_says(tmp_path: Path) -> None:
    (tmp_path / "context").write_text("FROM scratch\n")
    remote = _remote(tmp_path, "dockerfile")
    assert dockerfile_in(remote, None) == str(tmp_path / "context")
    assert dockerfile_in(remote, "Other.Dockerfile") == str(tmp_path / "context")


@pytest.mark.parametrize("value", ["https://h/r.git#main", "git@h:r.git", "https://h/ctx.tar",
                                   "git://h/r", "ssh://git@h/r.git", "github.com/moby/buildkit#v0.12"])
def test_a_remote_named_context_is_taken_to_be_fetched(value: str) -> None:
    from builder.base import NamedContext, parse_named_contexts

    assert parse_named_contexts({"Src": value}) == {"src": NamedContext("src", "url", value)}


@pytest.mark.parametrize("value", ["ftp://h/ctx.tar", "s3://bucket/ctx"])
def test_a_named_context_of_another_scheme_is_refused(value: str) -> None:
    from builder.base import parse_named_contexts
    from builder.errors import UsageError

    with pytest.raises(UsageError, match="only oci-layout://, docker-image://, a git repository, an "
                                         "http.s. URL and local folders are supported"):
        parse_named_contexts({"src": value})


@pytest.mark.parametrize(("output", "transient"), [
    ("fatal: unable to access 'https://h/r.git/': Recv failure: Connection reset by peer", True),
    ("error: RPC failed; curl 56 GnuTLS recv error (-54): Error in the pull function", True),
    ("fatal: expected flush after ref listing", True),
    ("fatal: the remote end hung up unexpectedly\nfatal: early EOF", True),
    ("fatal: unable to access 'https://h/r.git/': The requested URL returned error: 503", True),
    ("fatal: unable to access 'https://h/r.git/': The requested URL returned error: 404", False),
    ("fatal: unable to access 'http://127.0.0.1:1/x.git/': Couldn't connect to server", False),
    ("fatal: unable to access 'https://nohost/r.git/': Could not resolve host: nohost", False),
    ("fatal: repository 'https://h/r.git/' not found", False),
    ("fatal: Authentication failed for 'https://h/r.git/'", False),
])
def test_only_a_transfer_that_broke_off_is_tried_again(output: str, transient: bool) -> None:
    assert is_transient(output) is transient
