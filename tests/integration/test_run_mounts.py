"""`RUN --mount` through `pybuild build`: cache, bind, tmpfs, secret and ssh (issue 4)."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration import runbuild
from tests.integration.runbuild import Project, store_files

# fixtures
bb_layout = runbuild.bb_layout
project = runbuild.project

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps mount overlays: needs root")


def _under(layers: dict, *paths: str) -> list[str]:
    """Names in ``layers`` that are one of ``paths`` or inside one."""
    return [n for n in layers if any(n == p or n.startswith(p + "/") for p in paths)]


def _all_layers(img) -> dict:
    out: dict = {}
    for n in range(len(img.layer_digests)):
        out.update(img.layer(n))
    return out


def test_cache_mount_kept_between_builds_and_never_in_a_layer(project: Project) -> None:
    owned = "mode=0770,uid=1000,gid=1002"
    project.dockerfile(
        "FROM bb AS seed\n"
        "RUN mkdir -p /seed/sub && echo seeded > /seed/sub/s\n"
        "FROM bb\n"
        # every RUN below runs again when N changes
        "ARG N\n"
        # default id is the target; a first build finds it empty and fills it
        "RUN --mount=type=cache,target=/var/cache/app "
        "ls /var/cache/app > /seen-1; date +%s%N > /var/cache/app/stamp-$RANDOM\n"
        # id shared between targets, mode/uid/gid of the new cache folder
        f"RUN --mount=type=cache,id=shared,target=/a,{owned} "
        "stat -c '%a %u %g' /a > /a-stat; echo from-a > /a/f\n"
        f"RUN --mount=type=cache,id=shared,target=/b,{owned},sharing=locked cat /b/f > /b-saw\n"
        # private: a copy for this step, its writes not seen by the next one
        f"RUN --mount=type=cache,id=shared,target=/p,{owned},sharing=private echo p > /p/f\n"
        f"RUN --mount=type=cache,id=shared,target=/b,{owned},ro cat /b/f > /ro-saw; "
        "touch /b/x 2>/dev/null && echo writable >> /ro-saw || echo read-only >> /ro-saw\n"
        # from/source: the cache starts as a copy of another stage's folder
        "RUN --mount=type=cache,id=seeded,target=/s,from=seed,source=/seed/sub "
        "cat /s/s > /s-saw; echo more > /s/t\n"
        "RUN --mount=type=cache,target=/var/cache/app ls /var/cache/app | wc -l > /seen-2-$N\n")
    project.build("--build-arg", "N=1")
    layers = _all_layers(project.image())
    assert layers["seen-1"][1] == b""
    assert layers["a-stat"][1] == b"770 1000 1002\n"
    assert layers["b-saw"][1] == b"from-a\n"
    assert layers["ro-saw"][1] == b"from-a\nread-only\n"
    assert layers["s-saw"][1] == b"seeded\n"
    assert layers["seen-2-1"][1] == b"1\n"
    # the mount points and their contents leave no trace in any RUN layer
    assert not _under(layers, "var", "a", "b", "p", "s")
    # a second build (every step runs again) sees the first build's cache
    project.build("--build-arg", "N=2")
    layers = _all_layers(project.image())
    assert layers["seen-1"][1].decode().startswith("stamp-")
    assert layers["seen-2-2"][1] == b"2\n"
    assert layers["b-saw"][1] == b"from-a\n"  # the private write was not kept
    caches = list((project.store / "cache-mounts").iterdir())
    assert len([c for c in caches if c.is_dir()]) == 3  # /var/cache/app, shared, seeded


def test_cache_mount_is_keyed_by_what_it_starts_from(project: Project) -> None:
    # BuildKit keys a cache by id and base (mounts.go getRefCacheDir): uid/gid/mode or
    # from= make another cache of the same id; a relative target is its own default id
    project.dockerfile(
        "FROM bb AS seed\nRUN mkdir -p /s && echo seeded > /s/seed\n"
        "FROM bb\n"
        "RUN --mount=type=cache,id=x,target=/a,uid=1000 touch /a/f1\n"
        "RUN --mount=type=cache,id=x,target=/b ls /b > /ls1; touch /b/f2\n"
        "RUN --mount=type=cache,id=x,target=/c,uid=1000 ls /c > /ls2\n"
        "RUN --mount=type=cache,id=x,target=/d,mode=0700 ls /d > /ls3\n"
        "RUN --mount=type=cache,id=x,target=/e,from=seed,source=/s ls /e > /ls4; touch /e/f3\n"
        "RUN --mount=type=cache,id=x,target=/f,from=seed,source=/s ls /f > /ls5\n"
        "RUN --mount=type=cache,id=x,target=/g ls /g > /ls6\n"
        "RUN --mount=type=cache,id=x,target=/g,from=seed ls /g > /ls7\n"
        "WORKDIR /w1\nRUN --mount=type=cache,target=rel touch rel/r1\n"
        "WORKDIR /w2\nRUN --mount=type=cache,target=rel ls rel > /ls8\n"
        "RUN --mount=type=cache,target=/w1/rel ls /w1/rel > /ls9\n")
    project.build()
    layers = _all_layers(project.image())
    seen = {name: layers[name][1].decode().split() for name in layers if name.startswith("ls")}
    assert seen == {"ls1": [], "ls2": ["f1"], "ls3": [], "ls4": ["seed"], "ls5": ["f3", "seed"],
                    "ls6": ["f2"], "ls7": ["bin", "dev", "etc", "home", "proc", "root", "s", "sys", "tmp"],
                    "ls8": ["r1"], "ls9": []}


def test_no_cache_empties_the_cache_mounts_its_steps_use(project: Project) -> None:
    # BuildKit prunes the cache mounts of the steps that ignore the cache before they run
    # (vertex.go detectPrunedCacheID); later builds see what the last one left
    project.dockerfile("FROM bb\nARG N\n"
                       "RUN --mount=type=cache,target=/c echo $N >> /c/log && cat /c/log > /seen\n"
                       "RUN --mount=type=cache,target=/m,mode=0700 echo $N >> /m/log && "
                       "cat /m/log > /seen-m\n")
    seen = []
    for args in (["N=1"], ["N=2"], ["N=3", "--no-cache"], ["N=4"]):
        project.build("--build-arg", *args)
        layers = _all_layers(project.image())
        seen.append((layers["seen"][1], layers["seen-m"][1]))
    assert seen == [(b"1\n", b"1\n"), (b"1\n2\n", b"1\n2\n"), (b"3\n", b"3\n"),
                    (b"3\n4\n", b"3\n4\n")]


def test_bind_mounts(project: Project) -> None:
    project.dockerfile(
        "FROM bb AS tools\n"
        "RUN mkdir /tools && echo 'echo from-stage' > /tools/hello.sh\n"
        "FROM bb\n"
        "WORKDIR /w\n"
        # the context, read-only by default; a relative target is under WORKDIR
        "RUN --mount=type=bind,target=ctx cat ctx/data/a.txt > /a-copy; "
        "ls ctx > /ctx-list; touch ctx/new 2>/dev/null || echo ro > /ro\n"
        "RUN --mount=type=bind,source=data,target=/d cat /d/a.txt > /d-copy\n"
        "RUN --mount=type=bind,source=data/a.txt,target=/one.txt cat /one.txt > /one-copy\n"
        # rw: the step may write, the writes are thrown away
        "RUN --mount=type=bind,source=data,target=/rw,rw echo changed > /rw/a.txt; "
        "cat /rw/a.txt > /rw-saw\n"
        "RUN --mount=type=bind,from=tools,source=/tools,target=/t sh /t/hello.sh > /stage-run\n",
        **{"data/a.txt": "context data\n", "secret.key": "ignored", ".dockerignore": "*.key\n"})
    project.build()
    layers = _all_layers(project.image())
    assert layers["a-copy"][1] == b"context data\n"
    assert layers["ro"][1] == b"ro\n"
    assert "secret.key" not in layers["ctx-list"][1].decode()  # .dockerignore applies
    assert layers["d-copy"][1] == b"context data\n"
    assert layers["one-copy"][1] == b"context data\n"
    assert layers["rw-saw"][1] == b"changed\n"
    assert layers["stage-run"][1] == b"from-stage\n"
    assert (project.root / "data/a.txt").read_text() == "context data\n"
    assert not _under(layers, "w/ctx", "d", "rw", "t", "one.txt")
    # the bound content is part of the step's key: changing it runs the step again
    (project.root / "data/a.txt").write_text("other\n")
    project.build()
    assert _all_layers(project.image())["d-copy"][1] == b"other\n"
    steps = project.metadata()["pybuild.steps"]
    ran = [s["instruction"] for s in steps if not s["cached"]]
    assert "RUN --mount=type=bind,source=data,target=/d cat /d/a.txt > /d-copy" in ran


def test_a_mount_without_a_target_is_on_the_workdir(project: Project) -> None:
    # tonistiigi's `WORKDIR /src` + `RUN --mount=type=bind xx-go build .`: BuildKit joins the
    # empty target to the WORKDIR; at / it is an invalid target.
    project.dockerfile("FROM bb\nWORKDIR /src\nRUN --mount=type=bind cat main.go > /seen; ls /src > /list\n",
                       **{"main.go": "package main\n"})
    project.build()
    layers = _all_layers(project.image())
    assert layers["seen"][1] == b"package main\n"
    assert layers["list"][1].split() == [b"Dockerfile", b"main.go"]
    assert not _under(layers, "src/main.go")
    project.dockerfile("FROM bb\nRUN --mount=type=bind true\n")
    failed = project.build(check=False)
    assert 'Dockerfile:2: invalid mount target "/"' in failed.stderr
    assert "Traceback" not in failed.stderr


def test_mounts_from_an_image_or_a_named_context(project: Project, tmp_path: Path) -> None:
    # from= names a stage, a named context or an image, as COPY --from does (BuildKit's
    # dispatchRunMounts takes any of them); a folder context is keyed by its content
    folder = tmp_path / "tools"
    folder.mkdir()
    (folder / "v").write_text("1\n")
    project.contexts = (*project.contexts, f"tools={folder}")
    project.dockerfile(
        "FROM bb\n"
        "RUN --mount=from=bb,source=/etc,target=/x head -1 /x/passwd > /p1\n"
        "RUN --mount=type=cache,from=bb,source=/etc,target=/y,id=img head -1 /y/group > /p2\n"
        "RUN --mount=from=tools,target=/t cat /t/v > /p3\n")
    project.build()
    layers = _all_layers(project.image())
    assert (layers["p1"][1], layers["p2"][1], layers["p3"][1]) == \
        (b"root:x:0:0:root:/root:/bin/sh\n", b"root:x:0:\n", b"1\n")
    (folder / "v").write_text("2\n")
    project.build()
    assert _all_layers(project.image())["p3"][1] == b"2\n"


def test_tmpfs_mount(project: Project) -> None:
    project.dockerfile(
        "FROM bb\n"
        "RUN --mount=type=tmpfs,target=/scratch,size=4m "
        "grep ' /scratch ' /proc/mounts > /m; echo x > /scratch/f; df -k /scratch | tail -1 >> /m\n")
    project.build()
    layers = _all_layers(project.image())
    text = layers["m"][1].decode()
    assert text.startswith("tmpfs /scratch tmpfs rw")
    assert text.split("\n")[1].split()[1] == "4096"
    assert not _under(layers, "scratch")


def test_a_bad_mount_option_names_the_line(project: Project) -> None:
    project.dockerfile("FROM bb\nARG U=abc\nRUN --mount=type=cache,target=/c,uid=$U true\n")
    failed = project.build(check=False)
    assert failed.returncode == 1
    assert "Dockerfile:3: invalid value abc for uid" in failed.stderr
    assert "Traceback" not in failed.stderr


SECRET = "s3cr3t-VALUE-9f2d1c"


def test_secret_values_never_leave_the_step(project: Project, tmp_path: Path) -> None:
    secret_file = tmp_path / "token.txt"
    secret_file.write_text(SECRET)
    # The Dockerfile holds digests of the values only (it lands in the history itself).
    project.dockerfile(
        "FROM bb\n"
        "RUN --mount=type=secret,id=token "
        "sha256sum /run/secrets/token | cut -c1-64 > /ok1; stat -c '%a %u %g' /run/secrets/token >> /ok1\n"
        "RUN --mount=type=secret,id=token,target=/etc/tok,mode=0440,uid=1000,gid=1002 "
        "stat -c '%a %u %g' /etc/tok > /ok2\n"
        "RUN --mount=type=secret,id=fromenv,env=TOKEN "
        "printf %s \"$TOKEN\" | sha256sum | cut -c1-64 > /ok3; ls /run/secrets >> /ok3 2>&1 || true\n"
        "RUN --mount=type=secret,source=token,target=/s,env=ALSO "
        "test \"$ALSO\" = \"$(cat /s)\" && echo both-ok > /ok4\n"
        "RUN --mount=type=secret,id=absent cat /run/secrets/absent 2>/dev/null || echo absent > /ok5\n")
    meta = tmp_path / "meta.json"
    done = project.build("--secret", f"id=token,src={secret_file}",
                         "--secret", "id=fromenv,env=PB_TEST_TOKEN", "--iidfile", str(tmp_path / "iid"),
                         env={"PB_TEST_TOKEN": SECRET + "-env"})
    layers = _all_layers(project.image())
    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    env_digest = hashlib.sha256(SECRET.encode() + b"-env").hexdigest()
    assert layers["ok1"][1] == f"{digest}\n400 0 0\n".encode()
    assert layers["ok2"][1] == b"440 1000 1002\n"
    assert layers["ok3"][1].decode().startswith(f"{env_digest}\nls: /run/secrets: No such file")
    assert layers["ok4"][1] == b"both-ok\n"
    assert layers["ok5"][1] == b"absent\n"
    assert not _under(layers, "run", "etc/tok", "s")
    # every byte pybuild wrote: the archive (layers, config, history), the store, the
    # progress output, the metadata and iid files
    needles = [SECRET.encode(), SECRET.encode().hex().encode()]
    haystacks = [project.out, project.out.with_suffix(".json"), tmp_path / "iid", meta]
    haystacks += [p for p in store_files(project.store) if p.is_file() and not p.is_symlink()]
    for path in haystacks:
        if not path.exists():
            continue
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, path
    for n in range(len(project.image().layer_digests)):
        assert SECRET.encode() not in project.image().layer_bytes(n)
    assert SECRET not in done.stdout + done.stderr
    assert not list((project.store / "tmp").iterdir())
    # required=true fails clearly when the secret is not given
    project.dockerfile("FROM bb\nRUN --mount=type=secret,id=must,required=true true\n")
    failed = project.build(check=False)
    assert failed.returncode == 1
    assert "Dockerfile:2: secret must: not found" in failed.stderr


def test_ssh_agent_forwarding(project: Project, tmp_path: Path) -> None:
    if not (shutil.which("ssh-agent") and shutil.which("ssh-keygen") and shutil.which("ssh-add")):
        pytest.skip("openssh-client is not installed")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pybuild-test",
                        "-f", str(tmp_path / "id")], check=True)
        env = {"SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", str(tmp_path / "id")], check=True, env={**os.environ, **env},
                       capture_output=True)
        # The real ssh-add (with its libraries, from the host) asks the agent for its keys
        # through the forwarded socket.
        tools = project.root / "sshtools"
        tools.mkdir()
        shutil.copy2(shutil.which("ssh-add"), tools / "ssh-add")  # type: ignore[arg-type]
        ldd = subprocess.run(["ldd", str(tools / "ssh-add")], capture_output=True, text=True,
                             check=True).stdout
        loader = ""
        for lib in re.findall(r"(/\S+\.so[.\d]*)", ldd):
            shutil.copy2(lib, tools / os.path.basename(lib))
            if "ld-linux" in lib:
                loader = os.path.basename(lib)
        ssh_add = f"/opt/ssh/{loader} --library-path /opt/ssh /opt/ssh/ssh-add"
        project.dockerfile(
            "FROM bb\n"
            "RUN --mount=type=ssh echo \"$SSH_AUTH_SOCK\" > /sock; "
            "stat -c '%a %u %F' \"$SSH_AUTH_SOCK\" >> /sock\n"
            "USER app\n"
            "RUN --mount=type=bind,source=sshtools,target=/opt/ssh "
            f"--mount=type=ssh,uid=1000 {ssh_add} -l > /tmp/keys\n"
            "USER root\n"
            "RUN --mount=type=ssh,id=other,target=/agent,mode=0666 "
            "stat -c '%a' /agent > /other; test -S /agent && echo sock >> /other\n"
            "RUN --mount=type=ssh,id=missing echo optional > /optional\n")
        project.build("--ssh", "default", "--ssh", f"other={sock}", env=env)
        layers = _all_layers(project.image())
        assert layers["sock"][1] == b"/run/buildkit/ssh_agent.0\n600 0 socket\n"
        assert layers["tmp/keys"][1].decode().endswith(" pybuild-test (ED25519)\n")
        assert layers["other"][1] == b"666\nsock\n"
        assert layers["optional"][1] == b"optional\n"
        assert not _under(layers, "run", "agent")
        project.dockerfile("FROM bb\nRUN --mount=type=ssh,id=missing,required=true true\n")
        failed = project.build(check=False, env=env)
        assert failed.returncode == 1
        assert "Dockerfile:2: no SSH key 'missing' forwarded" in failed.stderr
        bad = project.build("--ssh", f"x={tmp_path / 'id'}", check=False)
        assert bad.returncode == 2 and "is not a socket" in bad.stderr
    finally:
        agent.terminate()
        agent.wait(timeout=10)
