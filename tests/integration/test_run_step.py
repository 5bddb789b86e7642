"""`pybuild build` RUN steps: shell/exec/heredoc forms, environment, users, WORKDIR, umask,
streamed output, failures, networks and resource limits (issue 4, "The step")."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration import runbuild
from tests.integration.runbuild import Project

# fixtures
bb_layout = runbuild.bb_layout
project = runbuild.project

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN steps mount overlays: needs root")


def _file(img, path: str) -> bytes:
    """The content of ``path`` in the topmost layer that has it."""
    for n in reversed(range(len(img.layer_digests))):
        entries = img.layer(n)
        if path in entries:
            return entries[path][1]
    raise AssertionError(f"{path} in no layer")


def test_forms_env_path_user_workdir_umask(project: Project) -> None:
    project.dockerfile(
        "FROM bb\n"
        "ARG GREETING=hello\n"
        "ARG UNSET\n"
        "ENV FROM_ENV=yes\n"
        # shell form through the default SHELL
        "RUN echo \"$GREETING $FROM_ENV\" > /shell; echo \"[$UNSET]\" >> /shell; "
        "echo \"$PATH\" >> /shell; umask >> /shell; echo $0 >> /shell\n"
        # exec form: no shell, no expansion of $GREETING
        'RUN ["/bin/echo", "exec", "$GREETING"]\n'
        'RUN ["/bin/sh", "-c", "echo exec $GREETING > /exec"]\n'
        # SHELL changes how the shell form runs
        'SHELL ["/bin/sh", "-xc"]\n'
        "RUN echo traced > /traced\n"
        'SHELL ["/bin/sh", "-c"]\n'
        # a single heredoc: its body is the shell's script
        "RUN <<EOT\n"
        "echo one > /heredoc\n"
        "echo two >> /heredoc\n"
        "EOT\n"
        # a shebang heredoc: run as a file mounted at /dev/pipes/NAME
        "RUN <<SCRIPT\n"
        "#!/bin/sh -e\n"
        "echo \"$0\" > /shebang\n"
        "ls -l /dev/pipes/ >> /shebang\n"
        "SCRIPT\n"
        # heredocs handed to the shell as they are
        "RUN cat <<A > /two && cat <<B >> /two\n"
        "first $GREETING\n"
        "A\n"
        "second\n"
        "B\n"
        "RUN <<EOT cat > /quoted\n"
        "$GREETING stays\n"
        "EOT\n"
        # users: name, uid, name:group, uid:gid, unknown uid, supplementary groups
        "USER app\nRUN id > /tmp/u-name && touch /tmp/f-name\n"
        "USER 1000\nRUN id > /tmp/u-uid\n"
        "USER app:other\nRUN id > /tmp/u-name-group\n"
        "USER 1000:1002\nRUN id > /tmp/u-uid-gid\n"
        "USER 4242\nRUN id > /tmp/u-unknown\n"
        "USER app\nRUN echo $HOME > /tmp/home\n"
        "USER root\n"
        "WORKDIR /made/here\n"
        "RUN pwd > /pwd && touch file\n"
        "USER app\nWORKDIR /app/owned\nRUN pwd > /tmp/app-pwd && touch mine\n")
    project.build()
    img = project.image()
    shell = _file(img, "shell").decode().splitlines()
    assert shell == ["hello yes", "[]", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                     "0022", "/bin/sh"]
    assert _file(img, "exec") == b"exec hello\n"
    assert _file(img, "traced") == b"traced\n"
    assert _file(img, "heredoc") == b"one\ntwo\n"
    shebang = _file(img, "shebang").decode()
    assert shebang.startswith("/dev/pipes/SCRIPT\n")
    assert re.search(r"-rwxr-xr-x .* SCRIPT", shebang)
    assert _file(img, "two") == b"first hello\nsecond\n"
    assert _file(img, "quoted") == b"hello stays\n"
    # nothing of the heredoc file or of /dev reaches a layer (the empty /dev mount point
    # does: bb has none, and BuildKit leaves runc's)
    for n in range(1, len(img.layer_digests)):
        assert not [p for p in img.layer(n) if p.startswith("dev/")]
    ids = {name: _file(img, f"tmp/u-{name}").decode().strip() for name in
           ("name", "uid", "name-group", "uid-gid", "unknown")}
    # As BuildKit: the primary gid first in the supplementary list, then the member groups.
    assert ids["name"] == "uid=1000(app) gid=1000(app) groups=1000(app),1001(extra)"
    assert ids["uid"] == "uid=1000(app) gid=1000(app) groups=1000(app),1001(extra)"
    assert ids["name-group"] == "uid=1000(app) gid=1002(other) groups=1002(other)"
    assert ids["uid-gid"] == "uid=1000(app) gid=1002(other) groups=1002(other)"
    assert ids["unknown"] == "uid=4242 gid=0(root) groups=0(root)"
    assert _file(img, "tmp/home") == b"/home/app\n"
    owned = {p: e[0] for n in range(len(img.layer_digests)) for p, e in img.layer(n).items()}
    assert (owned["tmp/f-name"].uid, owned["tmp/f-name"].gid) == (1000, 1000)
    assert owned["tmp/f-name"].mode & 0o777 == 0o644  # umask 0022
    assert _file(img, "pwd") == b"/made/here\n"
    assert owned["made/here"].isdir() and owned["made/here/file"].isreg()
    # WORKDIR made by USER app belongs to app, as BuildKit's mkdir does
    assert (owned["app/owned"].uid, owned["app/owned"].gid) == (1000, 1000)
    assert _file(img, "tmp/app-pwd") == b"/app/owned\n"
    created_by = [h["created_by"] for h in img.history]
    assert 'RUN |2 GREETING=hello UNSET= /bin/echo exec $GREETING # buildkit' in created_by
    # BuildKit runs the shebang script through the shell
    assert 'RUN |2 GREETING=hello UNSET= /bin/sh -c /dev/pipes/SCRIPT # buildkit' in created_by


def test_output_streams_and_failure_message(project: Project) -> None:
    lines = "".join(f"echo line-{i}; " for i in range(30))
    project.dockerfile(
        "FROM bb\n"
        "RUN echo start; sleep 2; echo end\n"
        f"RUN {lines} echo to-stderr >&2; exit 3\n")
    proc = subprocess.Popen(["pybuild", "build", "--root", str(project.store), "--progress",
                             "plain", "--build-context", project.contexts[0], str(project.root)],
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen: dict[str, float] = {}
    for line in proc.stderr:
        shown = re.match(r"#\d+ \d+\.\d+ (start|end)$", line.rstrip())
        if shown and shown.group(1) not in seen:
            seen[shown.group(1)] = time.monotonic()
        if "failed: exit code" in line:
            tail = line + proc.stderr.read()
            break
    else:
        tail = ""
    assert proc.wait(timeout=60) == 1
    # "start" was shown while the step still slept: streamed, not buffered to the end
    assert seen["end"] - seen["start"] > 1.5
    assert f"Dockerfile:3: RUN {lines} echo to-stderr >&2; exit 3 failed: exit code 3" in tail
    shown = [ln.strip() for ln in tail.splitlines() if ln.strip().startswith(("line-", "to-"))]
    assert shown == [f"line-{i}" for i in range(11, 30)] + ["to-stderr"]  # the last 20 lines
    assert "Traceback" not in tail


def test_exec_form_failure_and_missing_command(project: Project) -> None:
    project.dockerfile('FROM bb\nRUN ["/no/such/tool", "x"]\n')
    done = project.build(check=False)
    assert done.returncode == 1
    assert "Dockerfile:2: " in done.stderr and "/no/such/tool" in done.stderr
    assert "Traceback" not in done.stderr


def test_networks(project: Project) -> None:
    project.dockerfile(
        "FROM bb\n"
        "RUN ls /sys/class/net > /net-default\n"
        "RUN --network=none ls /sys/class/net > /net-none; ip -o link >> /net-none\n"
        "RUN --network=host ls /sys/class/net > /net-host\n")
    project.build()
    img = project.image()
    host = sorted(os.listdir("/sys/class/net"))
    assert _file(img, "net-none").decode().split()[0] == "lo"
    assert len([ln for ln in _file(img, "net-none").decode().splitlines() if ": " in ln]) == 1
    assert sorted(_file(img, "net-host").decode().split()) == host
    assert sorted(_file(img, "net-default").decode().split()) == host
    # --network=none for the whole build
    project.dockerfile("FROM bb\nRUN ls /sys/class/net > /net\n")
    project.build("--network", "none")
    assert project.image().layer(1)["net"][1] == b"lo\n"


def test_memory_and_cpu_limits(project: Project) -> None:
    cg = "/sys/fs/cgroup"
    if not (Path(cg, "cgroup.controllers").exists() or Path(cg, "memory", "cgroup.procs").exists()):
        pytest.skip("no cgroup memory controller mounted")
    project.dockerfile(
        "FROM bb\n"
        "RUN dd if=/dev/zero of=/dev/null bs=200M count=1\n")
    done = project.build("--memory", "64m", "--cpus", "0.5", check=False)
    assert done.returncode == 1
    assert "Dockerfile:2: RUN dd if=/dev/zero of=/dev/null bs=200M count=1 failed: " \
           "exit code 137" in done.stderr
    project.dockerfile("FROM bb\nRUN dd if=/dev/zero of=/dev/null bs=20M count=1 && echo ok > /ok\n")
    project.build("--memory", "64m", "--cpus", "0.5")
    assert project.image().layer(1)["ok"][1] == b"ok\n"


def test_cpu_max_is_set(project: Project, tmp_path: Path) -> None:
    """cpu.max (v2) or cfs quota (v1) of the step's cgroup, read from the host while it runs."""
    project.dockerfile("FROM bb\nRUN sleep 3\n")
    proc = subprocess.Popen(["pybuild", "build", "--root", str(project.store), "--cpus", "0.5",
                             "--build-context", project.contexts[0], str(project.root)],
                            stderr=subprocess.DEVNULL)
    found = None
    deadline = time.monotonic() + 20
    while found is None and time.monotonic() < deadline and proc.poll() is None:
        for pattern in ("/sys/fs/cgroup/cpu/**/pybuild-*/cpu.cfs_quota_us",
                        "/sys/fs/cgroup/**/pybuild-*/cpu.max"):
            for path in Path("/").glob(pattern.lstrip("/")):
                try:
                    found = path.name, path.read_text().strip()
                except OSError:
                    continue
        time.sleep(0.1)
    assert proc.wait(timeout=60) == 0
    assert found in (("cpu.cfs_quota_us", "50000"), ("cpu.max", "50000 100000"))
    assert not list(Path("/sys/fs/cgroup").glob("**/pybuild-*"))  # removed afterwards


def test_run_that_changes_nothing_has_an_empty_layer(project: Project) -> None:
    # as in BuildKit: every RUN has a layer, an empty tar when the step changed nothing;
    # a bare RUN is the shell with an empty command: it succeeds and changes nothing
    # (the first RUN leaves /dev, /proc and /sys, which bb lacks: see below)
    project.dockerfile("FROM bb\nRUN echo x > /x\nRUN true\nRUN\n")
    project.build()
    img = project.image()
    runs = [h for h in img.history if h["created_by"].startswith("RUN")]
    assert [h.get("empty_layer", False) for h in runs] == [False, False, False]
    assert runs[2]["created_by"] == "RUN /bin/sh -c  # buildkit"
    assert len(img.layer_digests) == 4
    assert list(img.layer(2)) == [] and list(img.layer(3)) == []
    # the diff_id of BuildKit's empty layers: a tar of its 1024-byte end marker alone
    empty = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
    assert img.config["rootfs"]["diff_ids"][2] == empty == img.config["rootfs"]["diff_ids"][3]
    meta = project.metadata()
    steps = {s["instruction"]: s for s in meta["pybuild.steps"]}
    assert steps["RUN true"]["layer"] is not None
    json.dumps(meta)


def test_runtime_mount_points_stay_in_the_first_run_layer(project: Project) -> None:
    # bb has no /dev, /proc or /sys. runc makes them to mount on and BuildKit's stub
    # cleaner leaves them (only /etc/hosts, /etc/resolv.conf and --mount targets go), so
    # the first RUN's layer holds them as empty root-owned directories; /etc, copied up
    # only for the /etc/hosts stub, is not in it.
    project.dockerfile("FROM bb\nRUN true\nRUN echo x > /x\n")
    project.build()
    img = project.image()
    first = img.layer(1)
    assert sorted(first) == ["dev", "proc", "sys"]
    for name in ("dev", "proc", "sys"):
        info = first[name][0]
        assert info.isdir() and (info.mode & 0o7777, info.uid, info.gid) == (0o755, 0, 0)
    assert sorted(img.layer(2)) == ["x"]
