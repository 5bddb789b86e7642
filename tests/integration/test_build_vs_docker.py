"""The image config pybuild writes is the one `docker build` (BuildKit) writes, field for field,
for a set of Dockerfiles built by both from the same base image in the same registry; for a
second set (FILE_CASES), the files of each layer too: names, modes, owners and contents; for
a third (TREE_CASES, on a context of folders, links and archives), every entry of every
layer, with link targets.

The reference here is Debian's docker 20.10, whose built-in BuildKit is older than the
Dockerfile reference pybuild follows. Only these documented differences are normalised:

* ARG history: docker 20.10 records an ARG's default even when --build-arg overrides it
  (`ARG V=1`); current BuildKit records the value in effect (`ARG V=2`).
* HEALTHCHECK history: docker 20.10 writes Go's %q of the config, `&{["CMD-SHELL" "x"] "30s"
  "0s" "0s" '\\x03'}`; Dockerfile 1.24 writes its %+v, `{Test:[CMD-SHELL x] Interval:30s
  Timeout:0s StartPeriod:0s StartInterval:0s Retries:3}`, with the StartInterval that
  `--start-interval` (Dockerfile 1.6) added.
* EXPOSE history: docker 20.10 writes the ports as a Go map (`EXPOSE map[80/tcp:{}]`);
  current BuildKit lists them as it read them (`EXPOSE [80/tcp]`, the words sorted before
  they are expanded). Both are compared as the set of ports they name.
* RUN layers: docker 20.10's runc leaves empty mount-point folders (/proc, /sys, /dev/...)
  in RUN layers, so layer contents (diff_ids) are not compared, only their number. (Both
  make a layer for every RUN, COPY, ADD and WORKDIR other than `/`, even one that changes
  nothing: current BuildKit's is an empty tar.)

(A stage built FROM another stage that declared ARGs is not among the cases: current BuildKit
lists the parent's ARGs in the RUN `|N K=V` prefix, docker 20.10 does not; see test_build_args.)
"""
from __future__ import annotations

import ast
import bz2
import functools
import gzip
import http.server
import io
import json
import lzma
import os
import re
import tarfile
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.buildtools import pybuild, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")

FIELDS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes", "Labels",
          "StopSignal", "Healthcheck", "OnBuild", "Shell", "ArgsEscaped")

CASES: dict[str, tuple[str, list[str]]] = {
    "metadata": ((
        "ARG BASE\n"
        "FROM $BASE\n"
        "ARG VERSION=1.0\n"
        "ARG UNSET\n"
        "ENV APP_HOME=/srv/app \\\n"
        "    MSG=\"hello world\" PATH=/opt/bin:$PATH\n"
        "ENV VERSION_ENV=$VERSION EMPTY=\n"
        "LABEL org.example.version=\"$VERSION\" \"multi word\"=\"a b\" description=plain\n"
        "LABEL escaped=a\\ b quoted='single $VERSION'\n"
        "MAINTAINER Jane Doe <jane@example.com>\n"
        "EXPOSE 80 443/tcp 7000-7002/udp 53/UDP ${PORT:-9000} ${VERSION_ENV:+9001}\n"
        "VOLUME [\"/data\", \"/logs\"]\n"
        "VOLUME /cache $APP_HOME/vol\n"
        "WORKDIR /srv\n"
        "WORKDIR app\n"
        "WORKDIR $APP_HOME/sub\n"
        "COPY a.txt b.txt ./\n"
        "USER 1000:1000\n"
        "STOPSIGNAL SIGUSR1\n"
        "HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=4 \\\n"
        "    CMD [\"wget\", \"-q\", \"http://localhost/\"]\n"
        "SHELL [\"/bin/sh\", \"-ec\"]\n"
        "CMD echo \"$MSG\"\n"
        "RUN echo \"$VERSION $UNSET\" > /tmp/version\n"),
        ["VERSION=2.0"]),
    "entrypoint_resets_inherited_cmd": (
        "ARG BASE\nFROM $BASE\nENTRYPOINT [\"/bin/echo\", \"x\"]\n", []),
    "shell_forms_and_cmd_kept": ((
        "ARG BASE\nFROM $BASE\n"
        "CMD [\"--help\"]\n"
        "ENTRYPOINT exec /bin/echo \"$HOME\"\n"
        "HEALTHCHECK CMD test -e /tmp || exit 1\n"), []),
    # bare shell forms: the shell gets an empty command, `/bin/sh -c ""`
    "bare_shell_forms": ("ARG BASE\nFROM $BASE\nENTRYPOINT\nCMD\n", []),
    "healthcheck_none_and_user_name": ((
        "ARG BASE\nFROM $BASE\n"
        "HEALTHCHECK NONE\n"
        "USER nobody\n"
        "WORKDIR /home/nobody\n"
        "SHELL [\"/bin/ash\", \"-o\", \"pipefail\", \"-c\"]\n"
        "ENTRYPOINT [\"/bin/sh\"]\n"
        "CMD ls -l | head -1\n"), []),
    "onbuild_and_multistage": ((
        "ARG BASE\n"
        "FROM $BASE AS parent\n"
        "ONBUILD ENV TRIGGERED=1\n"
        "ONBUILD LABEL from.onbuild=yes\n"
        "ONBUILD COPY a.txt /from-onbuild.txt\n"
        "ONBUILD RUN echo ran > /onbuild-ran\n"
        "LABEL parent=1\n"
        "CMD [\"parent\"]\n"
        "FROM scratch AS files\n"
        "COPY --chown=1:2 b.txt /b/\n"
        "FROM parent\n"
        "ONBUILD ENV NEXT=2\n"
        "COPY --from=files /b /copied-b\n"
        "COPY --from=1 /b/b.txt /copied-by-index.txt\n"
        "RUN cat /onbuild-ran /from-onbuild.txt > /child\n"
        "EXPOSE 8080/tcp 8080\n"), []),
    # steps that change nothing still make a layer each (an empty one in BuildKit)
    "steps_that_change_nothing": ((
        "ARG BASE\nFROM $BASE\n"
        "RUN mkdir -p /app/data && echo x > /app/data/x\n"
        "WORKDIR /app/data\n"
        "COPY nothing-matches-* /app/\n"
        "RUN true\n"
        "WORKDIR /\n"
        "COPY a.txt .\n"), []),
    # a stage name used twice is a warning: later references mean the last such stage
    "duplicate_stage_names": ((
        "ARG BASE\nFROM $BASE AS a\nENV WHICH=first\nFROM $BASE AS a\nENV WHICH=second\n"
        "FROM a\nRUN echo $WHICH > /which\n"), []),
    # several sources and a destination without a trailing /: copied in turn, no error
    "several_sources_one_path": (
        "ARG BASE\nFROM $BASE\nCOPY a.txt b.txt /notadir\nCOPY a.txt b.txt /dir/\n", []),
    # an absolute WORKDIR is kept as written; a relative one is joined and cleaned
    "workdir_as_written": (
        "ARG BASE\nFROM $BASE\nWORKDIR /app/\nWORKDIR ./sub/../other/.\nWORKDIR //x//y\n", []),
    # the parent is built and pushed by docker (see onbuild_parent): its triggers run here
    "onbuild_from_image": ((
        "ARG PARENT\n"
        "FROM $PARENT\n"
        "RUN cat /onbuild-ran /from-onbuild.txt > /child\n"), []),
}

PARENT_DOCKERFILE = (
    "ARG BASE\n"
    "FROM $BASE\n"
    "ONBUILD ARG FROM_TRIGGER=t\n"
    "ONBUILD ENV TRIGGERED=$FROM_TRIGGER\n"
    "ONBUILD COPY a.txt /from-onbuild.txt\n"
    "ONBUILD RUN echo ran > /onbuild-ran\n"
    "ONBUILD WORKDIR /w\n"
    "CMD [\"parent\"]\n")


@pytest.fixture(scope="module")
def onbuild_parent(docker_cli, busybox_image, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An image with ONBUILD triggers, built by docker and pushed to the test registry."""
    host = busybox_image.ref.split("/")[0]
    ref = f"{host}/onbuild/parent:1"
    context = write(tmp_path_factory.mktemp("parent"), {"Dockerfile": PARENT_DOCKERFILE})
    docker_cli.build(context, ref, build_args=[f"BASE={busybox_image.ref}"])
    docker_cli.check("push", ref)
    docker_cli.run("rmi", "-f", ref)
    return ref


def _normalise_docker(config: dict[str, Any], build_args: list[str]) -> list[dict[str, Any]]:
    """docker 20.10's history entries, with the documented differences (module docstring)
    brought to what current BuildKit writes."""
    overrides = dict(a.split("=", 1) for a in build_args)
    out = []
    for entry in config.get("history", []):
        text = entry.get("created_by", "")
        if text.startswith("ARG "):
            words = []
            for word in text[4:].split(" "):
                name = word.split("=", 1)[0]
                words.append(f"{name}={overrides[name]}" if name in overrides else word)
            text = "ARG " + " ".join(words)
        elif text.startswith("EXPOSE map["):
            text = _ports_shown(text[len("EXPOSE map["):-1].replace(":{}", "").split())
        elif text.startswith("HEALTHCHECK &{"):
            text = _healthcheck_now(text)
        out.append({"created_by": text, "empty_layer": bool(entry.get("empty_layer"))})
    return out


def _healthcheck_now(text: str) -> str:
    """docker 20.10's `HEALTHCHECK &{["CMD" "a b"] "30s" "5s" "10s" '\\x03'}` as Dockerfile
    1.24 writes it (StartInterval, which docker 20.10 lacks, is 0s)."""
    m = re.fullmatch(r'HEALTHCHECK &\{\[(.*)\] "([^"]*)" "([^"]*)" "([^"]*)" (\'.*\')\}', text)
    assert m, text
    test = [json.loads(q) for q in re.findall(r'"(?:[^"\\]|\\.)*"', m.group(1))]
    retries = ord(ast.literal_eval(m.group(5)))
    return (f"HEALTHCHECK {{Test:[{' '.join(test)}] Interval:{m.group(2)} Timeout:{m.group(3)} "
            f"StartPeriod:{m.group(4)} StartInterval:0s Retries:{retries}}}")


def _ports_shown(ports: list[str]) -> str:
    return "EXPOSE " + " ".join(sorted(set(ports)))


def _ours(config: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for h in config.get("history", []):
        text = h.get("created_by", "")
        if text.startswith("EXPOSE ["):
            text = _ports_shown(text[len("EXPOSE ["):-1].split())
        out.append({"created_by": text, "empty_layer": bool(h.get("empty_layer"))})
    return out


def _oci_archive_config(archive: Path) -> dict[str, Any]:
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        digest = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(tar.extractfile(f"blobs/sha256/{digest}"))  # type: ignore[arg-type]
        cdigest = manifest["config"]["digest"].split(":")[1]
        return json.load(tar.extractfile(f"blobs/sha256/{cdigest}"))  # type: ignore[arg-type, no-any-return]


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_matches_docker_buildkit(case: str, docker_cli, busybox_image, tmp_path: Path,
                                        store: str, request: pytest.FixtureRequest) -> None:
    dockerfile, build_args = CASES[case]
    context = write(tmp_path / "ctx", {"Dockerfile": dockerfile, "a.txt": "a\n", "b.txt": "b\n"})
    args = [f"BASE={busybox_image.ref}", *build_args]
    if "$PARENT" in dockerfile:
        args.append(f"PARENT={request.getfixturevalue('onbuild_parent')}")

    tag = f"pybuild-compare/{case}:latest"
    docker_cli.build(context, tag, build_args=args)
    theirs = docker_cli.saved_config(tag, tmp_path)
    docker_cli.run("rmi", "-f", tag)

    archive = tmp_path / "ours.tar"
    flags = [x for a in args for x in ("--build-arg", a)]
    pybuild("build", "--root", store, *flags, "-o", f"type=oci,dest={archive}", str(context))
    ours = _oci_archive_config(archive)

    for name in FIELDS:
        assert ours["config"].get(name) == theirs["config"].get(name), \
            f"{case}: config.{name}: pybuild {ours['config'].get(name)!r} != docker " \
            f"{theirs['config'].get(name)!r}"
    assert ours.get("author") == theirs.get("author")
    assert (ours["architecture"], ours["os"]) == (theirs["architecture"], theirs["os"])
    assert _ours(ours) == _normalise_docker(theirs, args), case
    assert len(ours["rootfs"]["diff_ids"]) == len(theirs["rootfs"]["diff_ids"])


# Files compared layer by layer: (name, type, mode, uid, gid, content) of every regular file,
# and of folders too in layers not made by RUN (docker 20.10 leaves empty mount points in RUN
# layers; current BuildKit removes them, as pybuild does). In the Dockerfiles {T} is a token
# new each run (a daemon keeps cache mounts between runs) and {BASE} the base image's ref.
FILE_CASES: dict[str, tuple[str, list[str]]] = {
    # WORKDIR folders are owned by USER read as --chown reads it: a bare uid is also the gid,
    # a name missing from /etc/passwd is 0 and no error
    "workdir_owners": ((
        "ARG BASE\nFROM $BASE\n"
        "RUN echo 'u5:x:1500:1600::/:/bin/sh' >> /etc/passwd && echo 'g6:x:1700:' >> /etc/group\n"
        "USER 1500\nWORKDIR /a\nUSER u5\nWORKDIR /b\nUSER nosuch:g6\nWORKDIR /c\n"
        "USER u5:\nWORKDIR /d\nUSER nosuch\nWORKDIR /e\nUSER root\n"
        "COPY --chown=u5 a.txt sub/new/\n"), []),
    # a cache is keyed by its id and what it starts from (uid/gid/mode, from=); a relative
    # target is its own default id under any WORKDIR
    "cache_mount_bases": ((
        "ARG BASE\nFROM $BASE AS seed\nRUN mkdir -p /s && echo seeded > /s/seed\n"
        "FROM $BASE\n"
        "RUN --mount=type=cache,id=x{T},target=/a,uid=1000 touch /a/f1\n"
        "RUN --mount=type=cache,id=x{T},target=/b ls /b > /ls1; touch /b/f2\n"
        "RUN --mount=type=cache,id=x{T},target=/c,uid=1000 ls /c > /ls2\n"
        "RUN --mount=type=cache,id=x{T},target=/d,mode=0700 ls /d > /ls3\n"
        "RUN --mount=type=cache,id=x{T},target=/e,from=seed,source=/s ls /e > /ls4; touch /e/f3\n"
        "RUN --mount=type=cache,id=x{T},target=/f,from=seed,source=/s ls /f > /ls5\n"
        "WORKDIR /w1\nRUN --mount=type=cache,target=rel{T} touch rel{T}/r1\n"
        "WORKDIR /w2\nRUN --mount=type=cache,target=rel{T} ls rel{T} > /ls6\n"), []),
    # RUN --mount from= an image, as COPY --from
    "mount_from_an_image": ((
        "ARG BASE\nFROM $BASE\n"
        "RUN --mount=from={BASE},source=/etc,target=/x head -1 /x/passwd > /p1\n"), []),
}


def _tree(layers: list[bytes], history: list[dict[str, Any]]) -> list[tuple[str, set[tuple]]]:
    """Each layer's made-by text and entries: (name, type, mode, uid, gid, link target,
    content), but the folders of RUN layers (docker 20.10's runc leaves its mount points
    there)."""
    made_by = [h.get("created_by", "") for h in history if not h.get("empty_layer")]
    out = []
    for raw, text in zip(layers, made_by, strict=True):
        entries = set()
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            for info in tar:
                if info.isdir() and text.startswith("RUN "):
                    continue
                data = tar.extractfile(info).read() if info.isreg() else b""  # type: ignore[union-attr]
                entries.add((info.name.removeprefix("./").rstrip("/"), info.type, info.mode & 0o7777,
                             info.uid, info.gid, info.linkname, data))
        out.append((text, entries))
    return out


def _files(layers: list[bytes], history: list[dict[str, Any]]) -> list[set[tuple]]:
    """``_tree`` without links: (name, type, mode, uid, gid, content) of regular files and
    of folders."""
    return [{entry[:5] + entry[6:] for entry in entries
             if entry[1] in tarfile.REGULAR_TYPES or entry[1] == tarfile.DIRTYPE}
            for _, entries in _tree(layers, history)]


def _docker_layers(archive: Path) -> tuple[list[bytes], dict[str, Any]]:
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        return [tar.extractfile(n).read() for n in manifest["Layers"]], config  # type: ignore[union-attr]


def _oci_layers(archive: Path) -> tuple[list[bytes], dict[str, Any]]:
    with tarfile.open(archive) as tar:
        def blob(digest: str) -> bytes:
            return tar.extractfile(f"blobs/sha256/{digest.split(':')[1]}").read()  # type: ignore[union-attr]

        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        layers = [blob(d["digest"]) for d in manifest["layers"]]
        config = json.loads(blob(manifest["config"]["digest"]))
    return [gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw for raw in layers], config


def _built_by_both(docker_cli, context: Path, tag: str, args: list[str], tmp_path: Path,
                   store: str) -> tuple[list[bytes], dict[str, Any], list[bytes], dict[str, Any]]:
    """``context`` built by docker, then by pybuild: (pybuild's layers, its config,
    docker's layers, its config), the layers as uncompressed tars."""
    docker_cli.build(context, tag, build_args=args)
    docker_cli.check("save", "-o", str(tmp_path / "docker.tar"), tag)
    docker_cli.run("rmi", "-f", tag)
    theirs, their_config = _docker_layers(tmp_path / "docker.tar")
    archive = tmp_path / "ours.tar"
    flags = [x for a in args for x in ("--build-arg", a)]
    pybuild("build", "--root", store, *flags, "-o", f"type=oci,dest={archive}", str(context))
    ours, our_config = _oci_layers(archive)
    return ours, our_config, theirs, their_config


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_files_match_docker_buildkit(case: str, docker_cli, busybox_image, tmp_path: Path,
                                     store: str) -> None:
    dockerfile, build_args = FILE_CASES[case]
    dockerfile = dockerfile.replace("{T}", uuid.uuid4().hex[:12]).replace("{BASE}", busybox_image.ref)
    context = write(tmp_path / "ctx", {"Dockerfile": dockerfile, "a.txt": "a\n"})
    args = [f"BASE={busybox_image.ref}", *build_args]
    ours, our_config, theirs, their_config = _built_by_both(
        docker_cli, context, f"pybuild-compare-files/{case}:latest", args, tmp_path, store)
    assert _files(ours, our_config["history"]) == _files(theirs, their_config["history"])


# Whole trees compared, for a richer context (folders, modes, symlinks, a hard link, names
# with spaces, archives of every compression; also served over HTTP, for ADD of URLs, where a
# case says {HTTP}): every entry of every layer (name,
# type, mode, owner, link target, content), but the folders of RUN layers (docker 20.10's
# mount points), the config fields and the history. Cases whose answer changed after docker
# 20.10 are left out, and pybuild follows current BuildKit there: `--chmod` on ADD and
# symbolic modes, `--chmod` applied to the folders COPY creates (fsutil 2025), `${V-word}`
# and `${V+word}` without a colon, a stage's ARG without a value taking the global scope's
# (the platform ARGs' automatic values too), the primary group among a RUN's supplementary groups
# (BuildKit 0.12), `ADD --chown` applied to an archive's entries (BuildKit 0.23). And one
# difference is normalised: docker 20.10 leaves COPY's `--chown` and `--chmod` out of the
# history, current BuildKit writes them.
def _tree_context(root: Path) -> Path:
    ctx = write(root, {
        "a.txt": "a\n", "b.txt": "b\n", "run.sh": "#!/bin/sh\necho hi\n",
        "src/one.py": "1\n", "src/two.py": "2\n", "src/pkg/three.py": "3\n",
        "src/pkg/data.json": "{}\n", "src/.hidden": "h\n", "docs/readme.md": "r\n",
        "docs/sub/deep.md": "d\n", "weird name.txt": "w\n", "dir with space/x": "x\n",
        "ignored.log": "l\n", "logs/app.log": "l\n", "logs/keep.log": "k\n",
        "node_modules/m/index.js": "m\n", "empty/.keep": ""})
    os.chmod(ctx / "run.sh", 0o755)
    os.chmod(ctx / "src/pkg/three.py", 0o600)
    os.chmod(ctx / "docs/sub", 0o750)
    os.symlink("a.txt", ctx / "link-to-a")
    os.symlink("src", ctx / "link-to-src")
    (ctx / "emptydir").mkdir()
    os.link(ctx / "b.txt", ctx / "b-hard.txt")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in (("t/x.txt", b"x\n", 0o644), ("t/bin/tool", b"#!/bin/sh\n", 0o755)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, 1234, 5678, 1_600_000_000
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("t/sym")
        link.type, link.linkname, link.mtime = tarfile.SYMTYPE, "x.txt", 1_600_000_000
        tar.addfile(link)
        folder = tarfile.TarInfo("t/emptyd")
        folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o711, 1_600_000_000
        tar.addfile(folder)
    plain = raw.getvalue()
    for name, packed in (("arch.tar", plain), ("arch.tar.gz", gzip.compress(plain)),
                         ("arch.tar.bz2", bz2.compress(plain)), ("arch.tar.xz", lzma.compress(plain)),
                         ("arch.notatar.gz", gzip.compress(plain)),
                         ("plain.gz", gzip.compress(b"just gz\n"))):
        (ctx / name).write_bytes(packed)
    return ctx


TREE_CASES: dict[str, str] = {
    "copy_folders": "COPY src /dst/\nCOPY src/ /dst2\nCOPY docs /docs\nCOPY . /all/\n",
    "copy_wildcards": ("COPY src/*.py /w1/\nCOPY src/p* /w2/\nCOPY *.txt /w3/\n"
                       "COPY src/[ot]*.py /w4/\nCOPY s?c /w5/\n"),
    "copy_symlinks": "COPY link-to-a /l1\nCOPY link-to-src /l2/\nCOPY link-to-a link-to-src /l4/\n",
    "copy_chmod_chown": "COPY --chmod=0700 a.txt /c1\nCOPY --chown=12:34 src /c2\n"
                        "COPY --chown=nobody --chmod=751 docs/sub/deep.md /tmp/\n",
    "copy_into_links_and_files": ("RUN mkdir -p /e && ln -s /e /esym\nCOPY a.txt /esym/\n"
                                  "COPY a.txt /etc\nCOPY src /etc/\n"),
    "copy_odd_names": ("COPY [\"weird name.txt\", \"/sp/\"]\nCOPY dir?with?space /sp2/\n"
                       "COPY emptydir /ed\nCOPY empty /ed2\nCOPY b.txt b-hard.txt /h/\n"),
    "add_archives": ("ADD arch.tar /x1/\nADD arch.tar.gz /x2\nADD arch.tar.bz2 arch.tar.xz /x3/\n"
                     "ADD plain.gz /x4/\nADD arch.notatar.gz /x5/\nADD src/ /x6/\nADD link-to-a /x7\n"),
    "relative_destinations": ("WORKDIR /app\nCOPY a.txt .\nCOPY src ./s\nCOPY b.txt rel/\n"
                              "WORKDIR sub\nCOPY a.txt ../up.txt\nWORKDIR /d\nCOPY b.txt ./././\n"
                              "COPY src/ .\n"),
    "copy_from_a_stage": ("FROM $BASE AS s1\n"
                          "RUN mkdir -p /o && echo 1 > /o/f && chmod 604 /o/f && ln -s f /o/l\n"
                          "FROM $BASE\nCOPY --from=s1 /o /p1\nCOPY --from=s1 /o/ /p2/\n"
                          "COPY --from=s1 /o/* /p3/\nCOPY --from=s1 /o/l /p4\n"),
    "variables_in_paths": ("ENV D=/envdir F=a.txt\nCOPY $F ${D}/\nCOPY ${F} ${D:-/x}/sub/\n"
                           "ARG Q=src\nCOPY $Q /${Q}-copy\nENV W=/work\nWORKDIR $W\n"
                           "WORKDIR ${W}/sub\nRUN pwd > /pwd\nWORKDIR rel\nRUN pwd >> /pwd\n"),
    "run_outputs": ("RUN mkdir /m && touch /m/f && umask 077 && touch /m/g && ls -l /m > /ls\n"
                    "RUN ln /m/f /m/hl\nARG X=1\nENV Y=2\n"
                    "RUN env | grep -E '^(X|Y|HOME|PATH)=' | sort > /runenv\n"
                    "USER 1234\nRUN echo $HOME > /tmp/home-of-1234\n"),
    "expansions": ("ARG A=alpha\nARG EMPTY=\n"
                   "ENV B=${A}-b C=\"$A c\" D='$A d' E=\\$A F=${UNSET:-def} G=${A:+alt} "
                   "H=${EMPTY:-e2} K=${A:-${UNSET:-nested}}\n"
                   "ENV ONE two three\nENV X=1 Y=$X Z=\"${X}${Y}\"\nENV Q \"quoted  spaces\"\n"
                   "RUN echo \"$A|$B|$C|$D|$E|$F|$G|$H|$K|$ONE|$X|$Y|$Z|$Q\" > /exp\n"),
    "continuations_and_json": ("RUN echo a \\\n# a comment inside\n    b \\\n\n    c > /cont\n"
                               "LABEL k=v \\\n      k2=\"v 2\"\nRUN echo 'x  y' \\\n  >> /cont\n"
                               "CMD [\"echo\", \"a b\", \"$HOME\"]\nENTRYPOINT [\"sh\", \"-c\"]\n"
                               "RUN [\"sh\", \"-c\", \"echo json > /j\"]\nSHELL [\"/bin/sh\", \"-xc\"]\n"
                               "RUN echo shelled > /s\nCMD [not json]\n"),
    "escape_directive": ("# escape=`\nARG BASE\nFROM $BASE\nRUN echo a `\n    b > /esc\n"
                         "COPY a.txt /c:\\dir\\x\nENV P=C:\\x Q=a`$b\nRUN echo \"$P $Q\" >> /esc\n"),
    "labels_ports_volumes": ("ARG P=8080\nLABEL \"a b\"=c d=\"e f\" g='h $P' i=$P\n"
                             "EXPOSE $P ${P}/udp 1-3/tcp\nSTOPSIGNAL 9\nVOLUME /v1 /v2\n"
                             "SHELL [\"/bin/sh\", \"-e\", \"-c\"]\nCMD echo hi\nENTRYPOINT echo ep\n"
                             "HEALTHCHECK --interval=5s CMD echo ok\n"),
    "onbuild_in_a_stage": ("FROM $BASE AS p\nONBUILD RUN echo trig > /trig\nONBUILD ENV T=1\n"
                           "FROM p\nRUN cat /trig > /seen\n"),
    "proxy_args": "ARG HTTP_PROXY\nARG NO_PROXY=x\nARG OTHER\nRUN echo \"$HTTP_PROXY|$NO_PROXY|$OTHER\" > /p\n",
    "build_arg_overrides": ("ARG A=default\nARG B\nARG C=c\nENV C=envc\n"
                            "RUN echo \"$A|$B|$C\" > /o\n"),
    "user_home": ("RUN echo 'u5:x:1500:1600::/home/u5:/bin/sh' >> /etc/passwd\nUSER u5\n"
                  "RUN echo $HOME > /tmp/h && id -u >> /tmp/h\nUSER 0\nRUN cat /tmp/h > /h\n"
                  "ENTRYPOINT [\"/bin/sh\", \"-c\", \"echo $0 $@\"]\nCMD [\"a\", \"b\"]\n"),
}
TREE_CASES.update({
    "remote_files": ("ADD {HTTP}/a.txt /dl/\nADD {HTTP}/b.txt /named\nADD {HTTP}/arch.tar.gz /u/\n"
                     "ADD {HTTP}/src/one.py?x=1 /q/\nADD {HTTP}/docs/readme.md /docs-dir/sub/\n"),
    "copy_from_an_image": "COPY --from={BASE} /bin/busybox /bb\nCOPY --from={BASE} /bin /bins/\n",
    "from_scratch": "FROM scratch\nCOPY a.txt src /\nCOPY --chown=1:1 docs /d\n",
})
TREE_BUILD_ARGS = {"proxy_args": ["HTTP_PROXY=http://p:1", "OTHER=o"],
                   "build_arg_overrides": ["A=given", "B=", "C=argc"]}


@pytest.mark.parametrize("case", sorted(TREE_CASES))
def test_trees_match_docker_buildkit(case: str, docker_cli, busybox_image, tmp_path: Path,
                                     store: str) -> None:
    body = TREE_CASES[case].replace("{BASE}", busybox_image.ref)
    dockerfile = body if body.startswith("#") else "ARG BASE\n" + (
        body if body.startswith("FROM") else "FROM $BASE\n" + body)
    context = _tree_context(tmp_path / "ctx")
    args = [f"BASE={busybox_image.ref}", *TREE_BUILD_ARGS.get(case, [])]
    # {HTTP}: the context served over HTTP on loopback (docker's daemon fetches with the
    # host's network, as pybuild does)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(context))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        (context / "Dockerfile").write_text(
            dockerfile.replace("{HTTP}", f"http://127.0.0.1:{server.server_address[1]}"))
        try:
            ours, our_config, theirs, their_config = _built_by_both(
                docker_cli, context, f"pybuild-compare-trees/{case}:latest", args, tmp_path, store)
        finally:
            server.shutdown()

    for name in FIELDS:
        assert our_config["config"].get(name) == their_config["config"].get(name), name
    flagless = [{**h, "created_by": re.sub(r"--ch(own|mod)=\S+ ", "", h["created_by"])
                 if h["created_by"].startswith("COPY ") else h["created_by"]}
                for h in _ours(our_config)]
    assert flagless == _normalise_docker(their_config, args)
    for (made_by, mine), (_, docker_s) in zip(_tree(ours, our_config["history"]),
                                              _tree(theirs, their_config["history"]), strict=True):
        assert mine == docker_s, (f"{made_by}\n  pybuild only: {sorted(mine - docker_s)}\n"
                                  f"  docker only: {sorted(docker_s - mine)}")


# The root filesystem a container sees, for steps that delete, replace and re-own what lower
# layers hold: pybuild writes such changes as whiteouts (and opaque folders) in its own way,
# so the image pybuild wrote is loaded into docker, and docker's own layer applier makes
# both containers' trees (`docker create` + `docker export`), which are compared entry by
# entry (name, type, mode, owner, link target, content; what docker adds to every container
# left out).
FLAT_CASES: dict[str, str] = {
    "deletions": ("RUN rm /etc/group && rm /bin/ls\nRUN mkdir -p /x/y && touch /x/y/z /x/w\n"
                  "RUN rm -rf /x && mkdir /x && touch /x/new\nRUN rm -rf /x/new /x\n"),
    "replaced_types": ("RUN mkdir -p /d1/in && touch /f1 && ln -s f1 /l1 && ln -s /d1 /l2\n"
                       "RUN rm -r /d1 && touch /d1 && rm /f1 && mkdir /f1 && rm /l1 && mkdir /l1"
                       " && rm /l2 && mkdir -p /l2/sub\n"),
    "metadata_only": ("RUN touch /x1 && chmod 600 /x1 && mkdir /dd && chmod 700 /dd\n"
                      "RUN chmod 644 /x1 && chown 5:6 /x1 /dd && chmod 1777 /dd\n"
                      "RUN touch -m -d 2001-01-01 /x1\n"),
    "layers_of_stages": ("FROM $BASE AS a\nRUN echo a > /a && mkdir /o && echo 1 > /o/f && chown -R 7:8 /o\n"
                         "FROM a AS b\nRUN rm /a && echo b > /b\nFROM b\nCOPY --from=a /a /from-a\n"
                         "COPY --from=a --chown=5:6 /o /p2\nRUN cat /b /from-a > /ab\n"),
}

_CONTAINER_EXTRAS = {".dockerenv", "etc/hostname", "etc/hosts", "etc/resolv.conf", "etc/mtab"}


def _container_tree(docker_cli, image: str, work: Path) -> dict[str, tuple]:
    container = docker_cli.check("create", image, "true").strip()
    try:
        docker_cli.check("export", "-o", str(work / "exported.tar"), container)
    finally:
        docker_cli.run("rm", "-f", container)
    tree = {}
    with tarfile.open(work / "exported.tar") as tar:
        for info in tar:
            name = info.name.removeprefix("./").rstrip("/")
            if name in _CONTAINER_EXTRAS or name.split("/")[0] in ("dev", "proc", "sys"):
                continue
            data = tar.extractfile(info).read() if info.isreg() else b""  # type: ignore[union-attr]
            tree[name] = (info.type, info.mode & 0o7777, info.uid, info.gid, info.linkname, data)
    return tree


@pytest.mark.parametrize("case", sorted(FLAT_CASES))
def test_container_trees_match_docker_buildkit(case: str, docker_cli, busybox_image, tmp_path: Path,
                                               store: str) -> None:
    body = FLAT_CASES[case]
    dockerfile = "ARG BASE\n" + (body if body.startswith("FROM") else "FROM $BASE\n" + body)
    context = write(tmp_path / "ctx", {"Dockerfile": dockerfile})
    args = ["--build-arg", f"BASE={busybox_image.ref}"]
    theirs_tag, ours_tag = f"pybuild-compare-flat/{case}:docker", f"pybuild-compare-flat/{case}:pybuild"
    docker_cli.build(context, theirs_tag, build_args=[args[1]])
    archive = tmp_path / "ours.tar"
    pybuild("build", "--root", store, *args, "-t", ours_tag,
            "-o", f"type=docker,dest={archive}", str(context))
    docker_cli.check("load", "-i", str(archive))
    try:
        theirs = _container_tree(docker_cli, theirs_tag, tmp_path)
        ours = _container_tree(docker_cli, ours_tag, tmp_path)
    finally:
        docker_cli.run("rmi", "-f", theirs_tag, ours_tag)
    assert ours.keys() == theirs.keys(), (sorted(ours.keys() - theirs.keys()),
                                          sorted(theirs.keys() - ours.keys()))
    assert {k: v for k, v in ours.items() if v != theirs[k]} == {}, \
        {k: (ours[k][:5], theirs[k][:5]) for k in ours if ours[k] != theirs[k]}


# .dockerignore patterns, each file on the same context, `COPY . /ctx/`: what is sent and
# copied must be what docker's (moby/patternmatcher) leaves.
IGNORE_CASES: dict[str, str] = {
    "mixed": ("*.log\n!logs/keep.log\nnode_modules\n**/*.md\n!docs/readme.md\nsrc/.hidden\n"
              "arch*\n"),
    "md_but_readme": "**/*.md\n!**/readme.md\n",
    "anchored": "/src/pkg\n./docs/sub\n",
    "reinclude_in_excluded_dir": "src\n!src/one.py\n",
    "all_but": "*\n!src\n!a.txt\n",
    "spaces_comments_slash": "# comment\n  logs  \n\nnode_modules/\n",
    "dockerfile_ignored": "Dockerfile\n.dockerignore\n",
    "deep_globs": "src/**/three.py\n**/.hidden\n",
    "classes": "[a-b].txt\nd?cs\n",
    "later_wins": "!a.txt\n*.txt\n",
    "dir_slash_reinclude": "src/pkg/\n!src/pkg/data.json\n",
    "links_and_archives": "link-*\narch.*\n!arch.tar\n",
    "all_but_a_tree": "**\n!docs/**\n",
}


@pytest.mark.parametrize("case", sorted(IGNORE_CASES))
def test_dockerignore_matches_docker_buildkit(case: str, docker_cli, busybox_image,
                                              tmp_path: Path, store: str) -> None:
    context = _tree_context(tmp_path / "ctx")
    (context / "Dockerfile").write_text("ARG BASE\nFROM $BASE\nCOPY . /ctx/\n")
    (context / ".dockerignore").write_text(IGNORE_CASES[case])
    ours, our_config, theirs, their_config = _built_by_both(
        docker_cli, context, f"pybuild-compare-ignore/{case}:latest",
        [f"BASE={busybox_image.ref}"], tmp_path, store)
    for (made_by, mine), (_, docker_s) in zip(_tree(ours, our_config["history"]),
                                              _tree(theirs, their_config["history"]), strict=True):
        assert mine == docker_s, (f"{made_by}\n  pybuild only: {sorted(e[0] for e in mine - docker_s)}\n"
                                  f"  docker only: {sorted(e[0] for e in docker_s - mine)}")
