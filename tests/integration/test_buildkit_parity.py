"""Where pybuild's images differed from current BuildKit's for the same Dockerfile (found by
building realistic Dockerfiles with both and comparing configs, history, layers and files):
each test pins what BuildKit (Dockerfile frontend 1.24) does. The cases docker 20.10 can
build too are also compared with it in test_build_vs_docker."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from tests.integration.runbuild import Project, pybuild

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: needs root")


@pytest.fixture()
def bb(tmp_path: Path, local_busybox: Path) -> Project:
    root = tmp_path / "ctx"
    root.mkdir()
    return Project(root, tmp_path / "store", tmp_path / "out.tar",
                   contexts=(f"bb=oci-layout://{local_busybox}:latest",))


def test_a_layer_made_again_stacks_with_itself(bb: Project) -> None:
    # the second COPY makes the very layer the first made: overlayfs refuses the same lower
    # folder twice, and the step after it failed ("Too many levels of symbolic links")
    bb.dockerfile("FROM bb\nCOPY a.txt /a\nRUN rm /a\nCOPY a.txt /a\nRUN cat /a > /b\n",
                  **{"a.txt": "again\n"})
    bb.build()
    img = bb.image()
    assert img.layer_digests[1] == img.layer_digests[3]
    assert img.layer(4)["b"][1] == b"again\n"


def test_expose_history_lists_the_ports_and_checks_protocols(bb: Project) -> None:
    # the words are sorted as written, then expanded; every port is listed, repeats too
    bb.dockerfile("FROM bb\nENV P=3000\nEXPOSE 80 ${P}/udp 7000-7001 80 127.0.0.1:8080:8081/TCP\n")
    bb.build()
    cfg = bb.image().config
    assert cfg["history"][-1]["created_by"] == \
        "EXPOSE [3000/udp 8081/tcp 7000/tcp 7001/tcp 80/tcp 80/tcp]"
    assert sorted(cfg["config"]["ExposedPorts"]) == \
        ["3000/udp", "7000/tcp", "7001/tcp", "80/tcp", "8081/tcp"]
    for line, message in [("EXPOSE 80/foo", 'invalid port: "80/foo": invalid proto: foo'),
                          ("EXPOSE 9000-8000", "invalid containerPort: 9000-8000"),
                          ("EXPOSE 70000", "invalid containerPort: 70000")]:
        bb.dockerfile(f"FROM bb\n{line}\n")
        failed = bb.build(check=False)
        assert f"Dockerfile:2: {message}" in failed.stderr, failed.stderr
        assert "Traceback" not in failed.stderr


def test_cmd_entrypoint_and_healthcheck_as_buildkit_writes_them(bb: Project) -> None:
    bb.dockerfile("FROM bb\nENTRYPOINT\nCMD\n"
                  "HEALTHCHECK --interval=90s --start-period=1500ms --retries=7 CMD [\"true\"]\n")
    bb.build()
    cfg = bb.image().config
    # a shell form with no words is the shell and an empty command line
    assert cfg["config"]["Entrypoint"] == ["/bin/sh", "-c", ""]
    assert cfg["config"]["Cmd"] == ["/bin/sh", "-c", ""]
    assert [h["created_by"] for h in cfg["history"][1:]] == [
        'ENTRYPOINT ["/bin/sh" "-c" ""]', 'CMD ["/bin/sh" "-c" ""]',
        "HEALTHCHECK {Test:[CMD true] Interval:1m30s Timeout:0s StartPeriod:1.5s "
        "StartInterval:0s Retries:7}"]


def test_duplicate_stage_names_warn_and_the_last_one_counts(bb: Project) -> None:
    # BuildKit's DuplicateStageName check is a warning: later references mean the last stage
    bb.dockerfile("FROM bb AS a\nENV WHICH=first\nFROM bb AS a\nENV WHICH=second\n"
                  "FROM a\nRUN echo $WHICH > /which\n")
    done = bb.build()
    assert 'DuplicateStageName: Duplicate stage name "a", stage names should be unique (line 3)' \
        in done.stderr
    assert bb.image().layer(1)["which"][1] == b"second\n"
    bb.build("--target", "a")
    assert "WHICH=second" in bb.image().config["config"]["Env"]


def test_onbuild_copy_from_names_a_stage_of_the_dockerfile(bb: Project) -> None:
    # BuildKit resolves --from in the triggers against the Dockerfile's stages; pybuild
    # looked for an image called "files" in a registry
    bb.dockerfile("FROM bb AS files\nRUN echo data > /data\n"
                  "FROM bb AS parent\nONBUILD COPY --from=files /data /onbuild-data\n"
                  "FROM parent\nRUN cat /onbuild-data > /seen\n")
    bb.build()
    img = bb.image()
    assert img.layer(1)["onbuild-data"][1] == b"data\n"
    assert img.layer(2)["seen"][1] == b"data\n"
    assert [h["created_by"] for h in img.history[1:]] == [
        "COPY /data /onbuild-data # buildkit", "RUN /bin/sh -c cat /onbuild-data > /seen # buildkit"]


def test_copy_from_with_a_variable_is_refused(bb: Project) -> None:
    bb.dockerfile("ARG SRC=bb\nFROM bb\nCOPY --from=${SRC} /etc/passwd /p\n")
    failed = bb.build(check=False)
    assert failed.returncode == 1
    assert ("Dockerfile:3: variable expansion is not supported for --from, define a new stage "
            "with FROM using ARG from global scope as a workaround") in failed.stderr
    assert "Traceback" not in failed.stderr


def test_a_bad_chmod_is_one_sentence(bb: Project) -> None:
    bb.dockerfile("FROM bb\nCOPY --chmod=999 a.txt /a\n", **{"a.txt": "a"})
    failed = bb.build(check=False)
    assert "Dockerfile:2: invalid chmod parameter: '999'. it should be octal string and between " \
        "0 and 07777\n" in failed.stderr


def test_an_absolute_workdir_is_kept_as_written(bb: Project) -> None:
    bb.dockerfile("FROM bb\nWORKDIR /app/\nRUN pwd > /first\nWORKDIR sub/../other/.\n")
    bb.build()
    img = bb.image()
    assert [h["created_by"] for h in img.history[1:3]] == [
        "WORKDIR /app/", "RUN /bin/sh -c pwd > /first # buildkit"]
    assert img.layer(2)["first"][1] == b"/app\n"
    assert img.config["config"]["WorkingDir"] == "/app/other"


def test_chown_with_an_empty_group_is_gid_0(bb: Project) -> None:
    # `user:` names the group, as an empty word: BuildKit sends it as id 0, so the file is not
    # given the user's primary group (docker 20.10 does the same)
    bb.dockerfile("FROM bb\n"
                  "RUN echo 'alice:x:1500:1600::/home/alice:/bin/sh' >> /etc/passwd"
                  " && echo 'team:x:1700:' >> /etc/group\n"
                  "COPY --chown=alice: f /g0\nCOPY --chown=alice f /g1\nCOPY --chown=alice:team f /g2\n"
                  "COPY --chown=alice:nosuchgroup f /g3\nCOPY --chown=:team f /g4\n", f="f")
    bb.build()
    img = bb.image()
    owners = [(img.layer(n)[f"g{n - 2}"][0].uid, img.layer(n)[f"g{n - 2}"][0].gid) for n in range(2, 7)]
    assert owners == [(1500, 0), (1500, 1600), (1500, 1700), (1500, 1600), (0, 1700)]


def test_copy_from_a_stage_defined_later_is_refused(bb: Project) -> None:
    # BuildKit knows every stage's name before it reads --from values, so a later stage is
    # found (pybuild looked for an image of that name) and then refused, as it is not built yet
    body = "FROM bb AS first\n{}\nFROM bb AS later\nRUN echo later > /out\n"
    for step, message in [
        ("COPY --from=later /out /got",
         'cannot copy from stage "later", it needs to be defined before current stage "first"'),
        ("COPY --from=1 /out /got",
         'cannot copy from stage "1", it needs to be defined before current stage "first"'),
        ("RUN --mount=from=later,target=/m cat /m/out",
         'cannot mount from stage "later" to "/m", stage needs to be defined before current command'),
        ("COPY --from=7 /out /got", "invalid stage index 7"),
    ]:
        bb.dockerfile(body.format(step))
        failed = bb.build("--target", "first", check=False)
        assert failed.returncode == 1
        assert f"Dockerfile:2: {message}\n" in failed.stderr, failed.stderr
        assert "Traceback" not in failed.stderr
    # a stage the target does not need is never converted: its reference is no error
    bb.dockerfile(body.format("COPY --from=later /out /got"))
    bb.build()
    assert bb.image().layer(1)["out"][1] == b"later\n"


def test_a_stage_that_needs_itself_is_refused_even_when_not_built(bb: Project) -> None:
    bb.dockerfile("FROM bb AS stage0\nCOPY --from=stage2 /a /a\nFROM bb AS stage1\n"
                  "COPY --from=stage0 /a /a\nFROM bb AS stage2\nCOPY --from=stage1 /a /a\n"
                  "FROM bb AS stage3\nCOPY --from=stage3 /b /b\nFROM bb\n")
    failed = bb.build(check=False)
    assert failed.returncode == 1
    assert "Dockerfile:2: circular dependency detected on stage: stage0\n" in failed.stderr
    bb.dockerfile("FROM bb\nRUN true\nFROM bb\nCOPY --from=1 /a /a\n")
    failed = bb.build(check=False)
    assert "Dockerfile:4: circular dependency detected on stage: stage-1\n" in failed.stderr


def test_copy_from_a_repeated_name_means_the_last_stage_of_that_name(bb: Project) -> None:
    bb.dockerfile("FROM bb AS a\nRUN echo 1 > /n\nFROM bb AS a\nRUN echo 2 > /n\n"
                  "FROM bb\nCOPY --from=a /n /n\n")
    bb.build()
    assert bb.image().layer(1)["n"][1] == b"2\n"
    bb.dockerfile("FROM bb AS a\nRUN echo 1 > /n\nFROM bb AS b\nCOPY --from=a /n /n\n"
                  "FROM bb AS a\nRUN echo 2 > /n\n")
    failed = bb.build("--target", "b", check=False)
    assert 'Dockerfile:4: cannot copy from stage "a", it needs to be defined before current ' \
        'stage "b"\n' in failed.stderr


def test_onbuild_of_a_base_image_may_copy_from_a_stage_of_the_dockerfile(bb: Project) -> None:
    # The triggers come with the base image, after the stage graph was made: the stage they
    # name is built then, even though nothing else in the Dockerfile needs it
    bb.dockerfile("FROM bb\nONBUILD COPY --from=builder /out /got\n"
                  "ONBUILD RUN --mount=from=builder,target=/m cat /m/out > /mounted\n")
    pybuild("build", "--root", str(bb.store), "--build-context", bb.contexts[0],
            "-t", "onbuild-base:1", str(bb.root))  # into the store, where FROM finds it
    bb.dockerfile("FROM bb AS builder\nRUN echo built > /out\nFROM onbuild-base:1\n"
                  "RUN cat /got > /seen\n")
    done = bb.build()
    img = bb.image()
    assert [img.layer(i).get(name, (None, None))[1] for i, name in
            [(1, "got"), (2, "mounted"), (3, "seen")]] == [b"built\n"] * 3
    assert " RUN echo built > /out\n" in done.stderr  # the stage was built, for the trigger
    # a stage defined after the one whose base brings the trigger is refused, at its FROM
    bb.dockerfile("FROM onbuild-base:1 AS app\nFROM bb AS builder\nRUN echo built > /out\n")
    failed = bb.build("--target", "app", check=False)
    assert 'Dockerfile:1: cannot copy from stage "builder", it needs to be defined before ' \
        'current stage "app"\n' in failed.stderr


def test_converter_errors_read_as_buildkit_s(bb: Project) -> None:
    cases = [
        ("FROM bb AS build\nFROM bb\n", ("--target", "biuld"),
         'target stage "biuld" could not be found (did you mean build?)\n'
         "the stages with a name: build\n"),
        ("FROM --platform=$TARGETPLATFROM bb\n", (),
         "Dockerfile:1: empty platform value from expression $TARGETPLATFROM "
         "(did you mean TARGETPLATFORM?)\n"),
        ("FROM --platform=${NOPE} bb\n", (),
         "Dockerfile:1: empty platform value from expression ${NOPE}\n"),
        ("", (), "the Dockerfile cannot be empty\nDockerfile is an empty file\n"),
    ]
    for dockerfile, args, stderr in cases:
        bb.dockerfile(dockerfile)
        failed = bb.build(*args, check=False)
        assert failed.returncode == 1
        assert stderr in failed.stderr, failed.stderr
        assert "Traceback" not in failed.stderr


def test_every_image_reference_is_checked_before_the_build(bb: Project) -> None:
    # BuildKit parses the base of every stage and every --from image, needed or not
    for dockerfile, message in [
        ("FROM Ubuntu AS unused\nFROM bb\n",
         'Dockerfile:1: failed to parse stage name "Ubuntu": invalid reference format: '
         "repository name (library/Ubuntu) must be lowercase"),
        ("FROM bb AS unused\nCOPY --from=bb:1@sha256:abc /x /x\nFROM bb\n",
         'Dockerfile:2: failed to parse stage name "bb:1@sha256:abc": invalid reference format'),
    ]:
        bb.dockerfile(dockerfile)
        failed = bb.build(check=False)
        assert failed.returncode == 1
        assert message + "\n" in failed.stderr, failed.stderr
        assert "#1 " not in failed.stderr  # nothing started


def test_heredocs_with_a_dash_lose_their_leading_tabs(bb: Project) -> None:
    # `<<-`: BuildKit chomps a RUN's lone heredoc before it runs it (dispatchRun) and a COPY
    # heredoc's file (parseSourcesAndDest); a chomped script with #! runs as a file
    bb.dockerfile("FROM bb\n"
                  "RUN <<-EOF\n\techo tabbed > /r\n\t\techo two >> /r\n\tEOF\n"
                  "COPY <<-EOF /c\n\tchomped\n\t\ttwo\n\tEOF\n"
                  "RUN <<-EOF\n\t#!/bin/sh\n\techo script > /s\n\tEOF\n"
                  "RUN cat <<-EOF > /kept\n\tthe shell chomps this one\n\tEOF\n")
    bb.build()
    img = bb.image()
    assert [h["created_by"] for h in img.history[1:]] == [
        "RUN /bin/sh -c echo tabbed > /r\necho two >> /r\n # buildkit",
        "COPY <<EOF /c # buildkit",
        "RUN /bin/sh -c /dev/pipes/EOF # buildkit",
        # the others are given to the shell as written, closed by the bare word
        "RUN /bin/sh -c cat <<-EOF > /kept\n\tthe shell chomps this one\nEOF # buildkit"]
    assert img.layer(1)["r"][1] == b"tabbed\ntwo\n"
    assert img.layer(2)["c"][1] == b"chomped\ntwo\n"
    assert img.layer(3)["s"][1] == b"script\n"
    assert img.layer(4)["kept"][1] == b"the shell chomps this one\n"


def test_workdir_folders_are_owned_as_chown_reads_user(bb: Project) -> None:
    # BuildKit makes WORKDIR with llb.WithUser(USER), read as --chown is: a bare uid is also
    # the gid, a name not in /etc/passwd is 0 (no error); docker 20.10 does the same
    bb.dockerfile("FROM bb\n"
                  "RUN echo 'u5:x:1500:1600::/:/bin/sh' >> /etc/passwd && echo 'g6:x:1700:' >> /etc/group\n"
                  "USER 1500\nWORKDIR /a\nUSER u5\nWORKDIR /b\nUSER nosuch:g6\nWORKDIR /c\n"
                  "USER u5:\nWORKDIR /d\nUSER nosuch\nWORKDIR /e\n")
    bb.build()
    img = bb.image()
    owners = [(img.layer(n)[d][0].uid, img.layer(n)[d][0].gid) for n, d in enumerate("abcde", 2)]
    assert owners == [(1500, 1500), (1500, 1600), (0, 1700), (1500, 0), (0, 0)]


def test_an_id_past_32_bits_is_a_name_and_a_bad_url_host_is_an_error(bb: Project) -> None:
    # llb's parseUID takes 32-bit ids only: a longer number is looked up as a name, not found,
    # and the file stays root's (pybuild's chown overflowed with a traceback)
    bb.dockerfile("FROM bb\nCOPY --chown=99999999999 a.txt /a\nCOPY --chown=2147483647:5 a.txt /b\n",
                  **{"a.txt": "a\n"})
    bb.build()
    img = bb.image()
    assert (img.layer(1)["a"][0].uid, img.layer(1)["a"][0].gid) == (0, 0)
    assert (img.layer(2)["b"][0].uid, img.layer(2)["b"][0].gid) == (2147483647, 5)
    bb.dockerfile("FROM bb\nADD http://[bad /p\n")
    failed = bb.build(check=False)
    assert failed.returncode == 1
    assert "Dockerfile:2: parse 'http://[bad': Invalid IPv6 URL\n" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_file_names_that_are_not_utf8_are_copied_as_their_bytes(bb: Project) -> None:
    # a name that is not UTF-8 ended the build with a UnicodeEncodeError in the checksum
    bb.dockerfile("FROM bb\nCOPY d /d/\n")
    (bb.root / "d").mkdir()
    with open(os.fsencode(bb.root / "d") + b"/bad\xffname", "wb") as f:
        f.write(b"x")
    (bb.root / "d" / "new\nline").write_text("y")
    bb.build()
    import gzip
    import io
    import tarfile

    raw = bb.image().layer_bytes(1)
    data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape") as tar:
        names = sorted(os.fsencode(m.name) for m in tar.getmembers())
    assert names == [b"d", b"d/bad\xffname", b"d/new\nline"]
    assert "CACHED" in bb.build().stderr  # the checksum is the same the second time


def test_a_dockerfile_with_bytes_that_are_not_utf8_builds(bb: Project) -> None:
    # the RUN line runs with its bytes; the history shows U+FFFD for each, as docker's does
    (bb.root / "Dockerfile").write_bytes(b"FROM bb\nRUN echo \xff\xfe > /x\n")
    bb.build()
    img = bb.image()
    assert img.layer(1)["x"][1] == b"\xff\xfe\n"
    assert img.history[-1]["created_by"] == "RUN /bin/sh -c echo \ufffd\ufffd > /x # buildkit"


def test_a_nul_byte_in_a_command_is_one_sentence(bb: Project) -> None:
    (bb.root / "Dockerfile").write_bytes(b"FROM bb\nRUN echo a\x00b > /x\n")
    failed = bb.build(check=False)
    assert failed.returncode == 1
    assert ("Dockerfile:2: the command, its environment or its folder contains a NUL byte, "
            "which no process can be given\n") in failed.stderr
    assert "Traceback" not in failed.stderr and "ValueError" not in failed.stderr


def _cap_eff(status: bytes) -> int:
    line = next(x for x in status.decode().splitlines() if x.startswith("CapEff:"))
    return int(line.split()[1], 16)


def test_security_insecure_needs_its_entitlement_and_then_keeps_every_capability(bb: Project) -> None:
    # As BuildKit: refused unless granted (buildx --allow security.insecure); pybuild used to
    # run such a step quietly with the default capabilities
    probe = '(cat /proc/self/status; grep " /sys " /proc/mounts; stat -c %F /proc/keys; ls /dev)'
    bb.dockerfile(f"FROM bb\nRUN --security=insecure {probe} > /insecure 2>&1\n"
                  f"RUN {probe} > /default 2>&1\n")
    failed = bb.build(check=False)
    assert failed.returncode == 1
    assert ("Dockerfile:2: granting entitlement security.insecure is not allowed by build daemon "
            "configuration\n") in failed.stderr
    assert "--allow security.insecure" in failed.stderr
    bb.build("--allow", "security.insecure")
    img = bb.image()
    with open("/proc/self/status", "rb") as f:
        ours = _cap_eff(f.read())
    insecure, default = img.layer(1)["insecure"][1], img.layer(2)["default"][1]
    assert _cap_eff(insecure) == ours
    assert _cap_eff(default) == 0xA80425FB  # docker's default set
    # privileged as runc makes it: /sys writable, nothing masked, the host's device nodes
    assert b" /sys sysfs rw," in insecure and b" /sys sysfs ro," in default
    assert b"regular empty file" in insecure and b"character special file" in default
    host_nodes = sorted(n for n in os.listdir("/dev")
                        if not os.path.isdir(f"/dev/{n}") and not os.path.islink(f"/dev/{n}"))
    listed = set(insecure.decode().split())
    assert [n for n in host_nodes if n not in listed] == []
    assert "loop0" not in default.decode().split() or "loop0" not in host_nodes
    bad = bb.build("--allow", "root.everything", check=False)
    assert bad.returncode == 2 and "invalid entitlement: root.everything" in bad.stderr


def test_a_required_device_fails_and_an_optional_one_is_left_out(bb: Project) -> None:
    # pybuild registers no CDI device: BuildKit's answer for a device that is not registered
    bb.dockerfile("FROM bb\nRUN --device=vendor.com/gpu=0 echo ran > /ran\n")
    done = bb.build()
    assert 'Optional device "vendor.com/gpu=0" is not registered' in done.stderr
    assert bb.image().layer(1)["ran"][1] == b"ran\n"
    bb.dockerfile("FROM bb\nRUN --device=vendor.com/gpu,required echo ran\n")
    failed = bb.build(check=False)
    assert failed.returncode == 1
    assert 'Dockerfile:2: required device "vendor.com/gpu" is not registered\n' in failed.stderr


def test_hard_links_are_kept_within_one_source_only(bb: Project) -> None:
    # BuildKit copies each source (and each match of a wildcard) on its own: two sources that
    # are links of one file come out as two files; inside one folder source the link stays
    bb.dockerfile("FROM bb AS s\nRUN mkdir /d && echo x > /d/a && ln /d/a /d/b\n"
                  "FROM bb\nCOPY --from=s /d/a /d/b /two/\nCOPY --from=s /d/* /glob/\n"
                  "COPY --from=s /d /one/\n")
    bb.build()
    img = bb.image()
    for n, folder in [(1, "two"), (2, "glob")]:
        layer = img.layer(n)
        assert [layer[f"{folder}/{name}"][0].isreg() for name in "ab"] == [True, True], folder
    one = img.layer(3)
    kinds = sorted((name, one[f"one/{name}"][0].islnk()) for name in "ab")
    assert kinds == [("a", False), ("b", True)]  # b is a hard link to a in the layer


def _step_names(plain: str) -> list[str]:
    """The steps' names in plain progress output ("#3 [2/4] RUN x" -> "[2/4] RUN x")."""
    return [line.split(" ", 1)[1] for line in plain.splitlines()
            if line.startswith("#") and " [" in line]


def test_steps_are_named_as_buildkit_names_them(bb: Project) -> None:
    # "[stage i/n] INSTRUCTION": the stage's name (stage-N when unnamed), left out when the
    # Dockerfile has one stage; n counts the stage's FROM of an image and its ADD, COPY, RUN
    # and WORKDIR steps, i is right-aligned to n's width; the image named in full, and the
    # stage's variables expanded into the text (docker 20.10 shows the same names)
    bb.dockerfile("FROM bb\n")
    pybuild("build", "--root", str(bb.store), "--build-context", bb.contexts[0],
            "-t", "base:1", str(bb.root))  # an image in the store, found by FROM
    bb.dockerfile("FROM base:1 AS build\nENV V=vv\nRUN echo $V\nFROM base:1\n"
                  "COPY --from=build /bin/sh /x\nWORKDIR /w\nRUN true\n")
    names = _step_names(bb.build().stderr)
    assert sorted(names) == sorted([
        "[build 1/2] FROM docker.io/library/base:1", "[build 2/2] RUN echo vv",
        "[stage-1 1/4] FROM docker.io/library/base:1", "[stage-1 2/4] COPY --from=build /bin/sh /x",
        "[stage-1 3/4] WORKDIR /w", "[stage-1 4/4] RUN true"])
    bb.dockerfile("FROM base:1\nARG A=aa\nRUN echo \"$A b\" '$A' ${U:-d} $A\n"
                  "RUN <<EOF\necho $A\necho two\nEOF\nCOPY --chmod=644 Dockerfile /x$A\n"
                  "WORKDIR rel/$A\n")
    names = _step_names(bb.build().stderr)
    # a RUN keeps its quotes and unset variables; a lone heredoc shows its first line; a
    # WORKDIR shows what was written, not the path it makes
    assert names[1:] == ["[2/5] RUN echo \"aa b\" '$A' ${U:-d} aa", "[3/5] RUN <<EOF (echo aa...)",
                         "[4/5] COPY --chmod=644 Dockerfile /xaa", "[5/5] WORKDIR rel/aa"]
    bb.dockerfile("FROM base:1\n" + "RUN true\n" * 9)
    names = _step_names(bb.build().stderr)
    assert names[0] == "[ 1/10] FROM docker.io/library/base:1"
    assert names[1:] == [f"[{i:>2}/10] RUN true" for i in range(2, 11)]


def test_an_arg_declared_again_without_a_value_keeps_the_value_in_effect(bb: Project) -> None:
    # BuildKit's dispatchArg sets nothing for an ARG with no value: the earlier `ARG A=again`
    # stays in RUN's environment and in the `|N` prefix (pybuild had the ENV's value again)
    bb.dockerfile("FROM bb\nARG A=arg\nENV A=env\nARG A=again\nARG A\nRUN echo $A > /a\n")
    bb.build()
    img = bb.image()
    assert img.history[-1]["created_by"] == "RUN |1 A=again /bin/sh -c echo $A > /a # buildkit"
    assert img.layer(len(img.layer_digests) - 1)["a"][1] == b"again\n"
    assert img.config["config"]["Env"][-1] == "A=env"


def _layout_with_config(src: Path, dest: Path, config: dict) -> Path:
    """A copy of the one-image OCI layout ``src`` whose config's `config` object is ``config``."""
    shutil.copytree(src, dest)
    blobs = dest / "blobs" / "sha256"

    def read(desc: dict) -> dict:
        return json.loads((blobs / desc["digest"].split(":")[1]).read_bytes())

    def write(doc: dict, desc: dict) -> dict:
        data = json.dumps(doc).encode()
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {**desc, "digest": "sha256:" + digest, "size": len(data)}

    index = json.loads((dest / "index.json").read_text())
    manifest = read(index["manifests"][0])
    manifest["config"] = write({**read(manifest["config"]), "config": config}, manifest["config"])
    index["manifests"][0] = write(manifest, index["manifests"][0])
    (dest / "index.json").write_text(json.dumps(index))
    return dest


def test_a_base_config_is_read_as_buildkit_reads_it(bb: Project, local_busybox: Path,
                                                     tmp_path: Path) -> None:
    # BuildKit reads a base config into its OCI config + docker extension: docker's container
    # fields are not carried on, a Healthcheck keeps its non-zero fields, Env strings are kept
    # as written, and the base's WorkingDir is set again as a WORKDIR sets it (a relative one
    # is joined to itself), which is where RUN runs; docker 20.10 writes the same config
    layout = _layout_with_config(local_busybox, tmp_path / "odd", {
        "Hostname": "h", "Domainname": "d", "AttachStdin": False, "Tty": True, "Image": "sha256:0",
        "MacAddress": "02:42:ac:11:00:02", "NetworkDisabled": True, "Entrypoint": None,
        "Env": ["PATH=/bin", "BARE", "KV=a=b", "SET"], "WorkingDir": "rel/dir", "Cmd": ["sh"],
        "Healthcheck": {"Test": ["CMD", "true"], "Interval": 0, "Retries": 2, "Other": 1}})
    bb.contexts = (f"odd=oci-layout://{layout}:latest",)
    bb.dockerfile("FROM odd AS base\nENV SET=now\nFROM base\nRUN pwd > /pwd\n")
    bb.build()
    img = bb.image()
    assert img.config["config"] == {
        "Env": ["PATH=/bin", "BARE", "KV=a=b", "SET=now"], "Cmd": ["sh"],
        "WorkingDir": "/rel/dir/rel/dir", "Healthcheck": {"Test": ["CMD", "true"], "Retries": 2}}
    assert img.layer(len(img.layer_digests) - 1)["pwd"][1] == b"/rel/dir/rel/dir\n"


def test_a_stage_on_a_stage_sees_the_config_env_over_the_parent_s_arg(bb: Project) -> None:
    # BuildKit adds the config's Env to the inherited environment again when a stage starts:
    # the parent's `ARG V=arg` (which beat its `ENV V=env`) gives way to V=env in the child,
    # while an ARG with no ENV of its name stays (docker 20.10 runs it the same way)
    bb.dockerfile("FROM bb AS base\nENV V=env\nARG V=arg\nARG W=warg\nRUN echo \"$V $W\" > /v1\n"
                  "FROM base\nRUN echo \"$V $W\" > /v2\n")
    bb.build()
    img = bb.image()
    last = len(img.layer_digests) - 1
    assert img.layer(last - 1)["v1"][1] == b"arg warg\n"
    assert img.layer(last)["v2"][1] == b"env warg\n"
    assert img.history[-1]["created_by"] == \
        'RUN |2 V=env W=warg /bin/sh -c echo "$V $W" > /v2 # buildkit'


def test_the_config_is_written_as_go_marshals_it(bb: Project) -> None:
    # BuildKit's config is Go's json.Marshal: maps (Labels, ExposedPorts, Volumes) with keys
    # sorted, and <, >, &, U+2028 escaped; docker 20.10 writes these very bytes
    bb.dockerfile("FROM bb\nMAINTAINER Jane <jane@example.com>\nLABEL z=1 a=\"x & y\"\n"
                  "EXPOSE 90 8080\nEXPOSE 100\nVOLUME /z /a\nCMD [\"\\u2028\"]\n")
    bb.build()
    img = bb.image()
    with tarfile.open(img.archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = json.loads(img._blob(tar, index["manifests"][0]["digest"]))
        raw = img._blob(tar, manifest["config"]["digest"])
    assert b'"author":"Jane \\u003cjane@example.com\\u003e"' in raw
    assert (b'"ExposedPorts":{"100/tcp":{},"8080/tcp":{},"90/tcp":{}},' in raw)
    assert b'"Cmd":["\\u2028"],"Volumes":{"/a":{},"/z":{}},' in raw
    assert b'"Labels":{"a":"x \\u0026 y","z":"1"}' in raw


def test_an_onbuild_trigger_is_parsed_only_where_it_runs(bb: Project) -> None:
    # BuildKit stores ONBUILD's text and parses it when a build runs it: an image whose
    # trigger would fail builds, with the trigger in its config; a stage on it fails at FROM
    bb.dockerfile("FROM bb\nONBUILD [\"weird\"]\nONBUILD COPY --nope f /\n")
    bb.build()
    assert bb.image().config["config"]["OnBuild"] == ['["weird"]', "COPY --nope f /"]
    bb.dockerfile("FROM bb AS a\nONBUILD [\"weird\"]\nFROM a\nRUN true\n")
    failed = bb.build(check=False)
    assert "Dockerfile:3: unknown instruction: [\"weird\"]" in failed.stderr, failed.stderr


def test_expose_splits_what_a_variable_gives_but_not_quoted_text(bb: Project) -> None:
    # EXPOSE's words go through BuildKit's ProcessWords: an unquoted $P of "80 81" is two
    # ports, "9$P" in quotes is the one word "980 81", an invalid port
    bb.dockerfile("FROM bb\nENV P=\"80 81\"\nEXPOSE $P \"90\"\n")
    bb.build()
    assert sorted(bb.image().config["config"]["ExposedPorts"]) == ["80/tcp", "81/tcp", "90/tcp"]
    bb.dockerfile("FROM bb\nENV P=\"80 81\"\nEXPOSE $P \"9$P\"\n")
    failed = bb.build(check=False)
    assert "Dockerfile:3: invalid containerPort: 980 81" in failed.stderr, failed.stderr
