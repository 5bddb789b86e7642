"""Where pybuild's images differed from current BuildKit's for the same Dockerfile (found by
building realistic Dockerfiles with both and comparing configs, history, layers and files):
each test pins what BuildKit (Dockerfile frontend 1.24) does. The cases docker 20.10 can
build too are also compared with it in test_build_vs_docker."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.runbuild import Project

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
