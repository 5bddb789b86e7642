"""Which command lines a replay of a fully cached build may answer (builder.warm)."""
from __future__ import annotations

import os

import pytest

from builder.warm import _ignored_top_level, _parse, _without_no_cache


@pytest.mark.parametrize("argv", [
    ["."], ["build", "."], ["build"], ["-t", "a:1", "."], ["build", "--tag=a", "-t", "b", "ctx"],
    ["build", "-q", "--build-arg", "A=1", "--build-arg", "B", "--target", "t", "."],
    ["build", "--metadata-file", "m.json", "--iidfile=i", "--progress", "plain", "."],
    ["-f", "other.Dockerfile", "--root", "/x", "."],
    ["build", "--build-context", "bb=oci-layout:///l:latest", "--build-context=b=docker-image://alpine", "."],
])
def test_plain_builds_may_be_replayed(argv: list[str]) -> None:
    parsed = _parse(argv)
    assert parsed is not None


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["build", "--help"], ["images"], ["plan", "."], ["--debug", "build", "."],
    ["build", "--no-cache", "."], ["build", "--pull", "."], ["build", "-o", "out", "."],
    ["build", "--output=type=oci,dest=x", "."], ["build", "--push", "-t", "a", "."],
    ["build", "--secret", "id=a,src=f", "."], ["build", "--ssh", "default", "."],
    ["build", "--explain", "."], ["build", "--cache-from", "r/x", "."],
    ["build", "--cache-to", "type=local,dest=d", "."], ["build", "--build-context", "a=b", "."],
    ["build", "--build-context", "a=https://example.com/x.git", "."],
    ["build", "--check-reproducible", "."], ["build", "-"], ["build", "-f", "-", "."],
    ["build", "a", "b"], ["build", "-t"], ["build", "-qt", "x", "."], ["build", "--", "."],
    ["build", "--no-cache-filter", "s", "."], ["build", "-f", "a", "-f", "b", "."],
])
def test_anything_else_builds(argv: list[str]) -> None:
    assert _parse(argv) is None


def test_parsed_options() -> None:
    parsed = _parse(["build", "-t", "a:1", "--tag=b", "--build-arg", "X", "-q", "ctx"])
    assert parsed == {"context": "ctx", "opts": {"tag": ["a:1", "b"], "build-arg": ["X"], "quiet": ["1"]}}


def test_only_plain_top_level_names_are_skipped(tmp_path) -> None:
    (tmp_path / ".dockerignore").write_text("# c\nnode_modules\n/.git/\n./build\n*.log\nsrc/tmp\n")
    assert _ignored_top_level(str(tmp_path), str(tmp_path / "Dockerfile")) == {"node_modules", ".git", "build"}
    (tmp_path / ".dockerignore").write_text("node_modules\n!node_modules/keep\n")
    assert _ignored_top_level(str(tmp_path), str(tmp_path / "Dockerfile")) == frozenset()
    (tmp_path / ".dockerignore").write_text("node_modules\n")
    (tmp_path / "Dockerfile.dockerignore").write_text("other\n")
    assert _ignored_top_level(str(tmp_path), str(tmp_path / "Dockerfile")) == frozenset()
    (tmp_path / "Dockerfile.dockerignore").unlink()
    (tmp_path / ".dockerignore").write_text(".dockerignore\nDockerfile\nnode_modules\n")
    assert _ignored_top_level(str(tmp_path), str(tmp_path / "Dockerfile")) == {"node_modules"}


@pytest.fixture(params=["one process", "split in two"])
def split(request, monkeypatch):
    """The context walk as one process, or split between two at once (after the top)."""
    from builder import warm

    if request.param == "split in two":
        monkeypatch.setattr(warm, "SPLIT_AT", 1)
        monkeypatch.setattr(warm, "_may_fork", lambda: True)
    else:
        monkeypatch.setattr(warm, "SPLIT_AT", 10**9)
        monkeypatch.setattr(warm, "SPLIT_FOLDERS", 10**9)
    return request.param


def test_the_context_stamp_sees_every_kind_of_change(tmp_path, split) -> None:
    from builder.warm import _tree_stamp

    top = tmp_path / "ctx"
    (top / "a" / "deep").mkdir(parents=True)
    (top / "b").mkdir()
    (top / "a" / "deep" / "f.txt").write_text("one\n")
    (top / "b" / "g.txt").write_text("two\n")
    (top / "skipped").mkdir()
    seen = {_tree_stamp(str(top))[0]}

    def changed() -> bool:
        stamp = _tree_stamp(str(top), frozenset({"skipped"}))[0]
        new = stamp not in seen
        seen.add(stamp)
        return new

    assert changed()  # the skip list is part of what is stamped
    assert not changed()  # the same tree gives the same stamp
    (top / "skipped" / "x").write_text("x\n")
    assert not changed()  # a skipped top-level name is not walked
    (top / "a" / "deep" / "f.txt").write_text("ONE\n")  # same size, two folders down
    assert changed()
    os.chmod(top / "b" / "g.txt", 0o600)
    assert changed()
    (top / "b" / "g.txt").rename(top / "a" / "g.txt")  # the same name in another folder
    assert changed()
    (top / "b" / "empty").mkdir()
    assert changed()
    os.symlink("a", top / "link")
    assert changed()
    stamp, newest = _tree_stamp(str(top))
    assert newest == max(os.lstat(p).st_ctime_ns for p in [*top.rglob("*")])
    # the code stamp (meta=False) skips __pycache__ folders but not their neighbours
    (top / "__pycache__").mkdir()
    before = _tree_stamp(str(top), meta=False)[0]
    (top / "__pycache__" / "m.pyc").write_bytes(b"x")
    assert _tree_stamp(str(top), meta=False)[0] == before
    (top / "m.py").write_text("x\n")
    assert _tree_stamp(str(top), meta=False)[0] != before


def test_a_split_walk_gives_the_same_stamp_whoever_walks_the_second_half(tmp_path, monkeypatch) -> None:
    from builder import warm

    top = tmp_path / "ctx"
    for i in range(6):
        (top / f"d{i}" / "sub").mkdir(parents=True)
        (top / f"d{i}" / "sub" / "f").write_text(str(i))
    serial = warm._tree_stamp(str(top))
    monkeypatch.setattr(warm, "SPLIT_AT", 1)
    monkeypatch.setattr(warm, "_may_fork", lambda: True)
    forked = warm._tree_stamp(str(top))
    assert forked[0] != serial[0] and forked[1] == serial[1]  # the digest says it was split
    assert warm._tree_stamp(str(top)) == forked
    theirs = os.listdir(top)[1]  # every other folder after the top goes to the child
    (top / theirs / "sub" / "f").write_text("x")
    changed = warm._tree_stamp(str(top))
    assert changed[0] != forked[0] and changed[1] > forked[1]

    def no_fork() -> int:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(warm.os, "fork", no_fork)  # no second process: this one walks both
    assert warm._tree_stamp(str(top)) == changed


@pytest.mark.parametrize("argv", [
    ["build", "--add-host", "db:10.0.0.1", "--add-host=x=10.0.0.2", "."],
    ["build", "--shm-size", "1g", "--ulimit", "nofile=10:20", "--ulimit=nproc=5", "."],
    ["build", "--annotation", "k=v", "--annotation=manifest-descriptor:a=b", "--load", "."],
    ["build", "--provenance=false", "--sbom", "0", "."],
])
def test_buildx_flags_for_sandbox_and_manifest_may_be_replayed(argv: list[str]) -> None:
    # their values are in the memo's key (the whole argv): another value is another memo
    assert _parse(argv) is not None


@pytest.mark.parametrize("argv", [
    ["build", "--load=true", "."],  # click takes no value for it: a usage error, not a replay
    ["build", "--provenance=true", "."], ["build", "--sbom", "mode=max", "."],  # refused by a build
    ["build", "--attest", "type=sbom,disabled=true", "."],  # not worth parsing here: built
])
def test_buildx_flags_a_replay_cannot_answer(argv: list[str]) -> None:
    assert _parse(argv) is None


def test_a_symlinked_dockerignore_skips_nothing(tmp_path) -> None:
    # the build reads it inside the context (a link out of it is no file there)
    (tmp_path / "outside").write_text("src\n")
    (tmp_path / "ctx").mkdir()
    os.symlink("../outside", tmp_path / "ctx/.dockerignore")
    assert _ignored_top_level(str(tmp_path / "ctx"), str(tmp_path / "ctx/Dockerfile")) == frozenset()


def test_a_no_cache_build_is_stamped_as_the_command_without_the_flag() -> None:
    assert _without_no_cache(["build", "--no-cache", "-t", "a", "."]) == ["build", "-t", "a", "."]
    assert _without_no_cache(["--no-cache", "."]) == ["."]
    assert _without_no_cache(["build", "-t", "a", "."]) is None
    # a value that reads like the flag is a value: that command is not a --no-cache build
    assert _without_no_cache(["build", "--label", "--no-cache", "."]) is None
    assert _without_no_cache(["build", "--label", "--no-cache", "--no-cache", "."]) == \
        ["build", "--label", "--no-cache", "."]


def test_a_split_walk_takes_the_second_half_from_the_child(tmp_path, monkeypatch) -> None:
    # the child's answer is used, not walked again here: this process walks its own half only
    from builder import warm

    top = tmp_path / "ctx"
    for i in range(4):
        (top / f"d{i}").mkdir(parents=True)
        (top / f"d{i}" / "f").write_text(str(i))
    monkeypatch.setattr(warm, "SPLIT_AT", 1)
    monkeypatch.setattr(warm, "_may_fork", lambda: True)
    walked_here: list[list[str]] = []
    real = warm._walked

    def counting(folders: list, meta: bool, given: dict | None = None) -> tuple[bytes, int]:
        walked_here.append(folders)  # the child's appends stay in the child
        return real(folders, meta, given)

    monkeypatch.setattr(warm, "_walked", counting)
    stamp = warm._tree_stamp(str(top))
    assert len(walked_here) == 1 and len(walked_here[0]) == 2
    monkeypatch.setattr(warm, "SPLIT_AT", 10**9)
    monkeypatch.setattr(warm, "SPLIT_FOLDERS", 10**9)
    assert warm._tree_stamp(str(top))[1] == stamp[1]  # the same newest ctime, walked whole


def test_a_wide_tree_splits_right_after_its_top(tmp_path, monkeypatch) -> None:
    from builder import warm

    top = tmp_path / "ctx"
    for i in range(warm.SPLIT_FOLDERS):
        (top / f"d{i:03}").mkdir(parents=True)
    monkeypatch.setattr(warm, "_may_fork", lambda: True)
    stamp = warm._tree_stamp(str(top))[0]
    monkeypatch.setattr(warm, "SPLIT_FOLDERS", 10**9)
    assert warm._tree_stamp(str(top))[0] != stamp  # the digest says where the walk split


def test_a_memo_file_that_is_torn_or_foreign_is_ignored() -> None:
    from builder.warm import _pack_memo, _unpack_memo

    memo = {"v": 4, "events": [["start", "[1/2] FROM x"], ["cached", 1]], "steps": ["ab" * 32],
            "metadata": "{\n}\n", "watch": [["/x", [1, 2, 3]]]}
    data = _pack_memo(memo)
    assert _unpack_memo(data) == memo
    assert _unpack_memo(data[:-3]) is None  # cut short
    assert _unpack_memo(data[:20]) is None
    assert _unpack_memo(b'{"v": 4}') is None  # an older pybuild's JSON memo
    flipped = bytearray(data)
    flipped[-1] ^= 1
    assert _unpack_memo(bytes(flipped)) is None


def test_a_split_walk_leaves_no_child_behind(tmp_path, monkeypatch) -> None:
    # the parent takes the child's answer without waiting for it to end; the next walk
    # collects it (a replay ends the process at once, and init does)
    import time

    from builder import warm

    top = tmp_path / "ctx"
    for i in range(4):
        (top / f"d{i}").mkdir(parents=True)
    monkeypatch.setattr(warm, "SPLIT_AT", 1)
    monkeypatch.setattr(warm, "_may_fork", lambda: True)
    seen: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid:
            seen.append(pid)
        return pid

    monkeypatch.setattr(warm.os, "fork", fork)
    for _ in range(3):
        warm._tree_stamp(str(top))
        time.sleep(0.2)
    assert len(seen) == 3 and set(warm._UNREAPED) <= {seen[-1]}
    for pid in seen[:-1]:
        with pytest.raises(ChildProcessError):  # collected: no zombie left
            os.waitpid(pid, os.WNOHANG)


def test_a_walk_given_the_last_listing_reads_only_the_folders_that_changed(tmp_path, monkeypatch,
                                                                          split) -> None:
    from builder import warm

    top = tmp_path / "ctx"
    for i in range(3):
        (top / f"d{i}" / "sub").mkdir(parents=True)
        (top / f"d{i}" / "sub" / "f").write_text(str(i))
    (top / "skipped").mkdir()
    skip = frozenset({"skipped"})
    given = warm._tree_walk(str(top), skip)[2]  # the listing a memo keeps
    assert sorted(given) == [str(top / f"d{i}{sub}") for i in range(3) for sub in ("", "/sub")]

    def stamp(listing=None):
        return warm._tree_stamp(str(top), skip, given=listing)

    listed: list[int] = []
    real_listdir = os.listdir

    def counting_listdir(fd):
        listed.append(fd)
        return real_listdir(fd)

    monkeypatch.setattr(warm.os, "listdir", counting_listdir)
    truth = stamp()
    listed.clear()
    assert stamp(given) == truth
    assert split == "split in two" or len(listed) == 1  # the top only (the child's are its own)

    # the recorded names are what the walk hashes: a listing that lies can only miss
    wrong = dict(given)
    wrong[str(top / "d1" / "sub")] = (given[str(top / "d1" / "sub")][0], "f\0ghost")
    assert stamp(wrong) != truth

    # a folder that changed has another stat: it is listed again, and the stamp is true
    (top / "d2" / "sub" / "new").write_text("n")
    (top / "new-at-top").write_text("n")  # the top is always listed
    assert stamp(given) == stamp() != truth
