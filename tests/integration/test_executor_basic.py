"""The executor on the real kernel: isolation, the root's contents, users, capabilities."""
from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from builder.errors import ExecError
from builder.executor import RootFS, RunSpec, run_step
from builder.executor.spec import capability_mask

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def test_output_streams_while_the_step_runs(busybox_rootfs: Path, tmp_path: Path) -> None:
    (tmp_path / "u").mkdir()
    (tmp_path / "w").mkdir()
    seen: list[tuple[float, bytes]] = []
    code = run_step(RunSpec(argv=("/bin/sh", "-c", "echo one; sleep 0.5; echo two >&2")),
                    RootFS([busybox_rootfs], tmp_path / "u", tmp_path / "w"),
                    output=lambda chunk: seen.append((time.monotonic(), chunk)))
    assert code == 0
    assert b"".join(c for _, c in seen) == b"one\ntwo\n"
    first = next(t for t, c in seen if b"one" in c)
    second = next(t for t, c in seen if b"two" in c)
    assert second - first > 0.3


def test_exit_codes_and_signals(busybox_rootfs: Path, run_on) -> None:
    assert run_on(busybox_rootfs, "exit 3").code == 3
    assert run_on(busybox_rootfs, "true").code == 0
    # The step is PID 1 of its namespace, as in BuildKit: its own signals do not kill it...
    assert run_on(busybox_rootfs, "kill -9 $$; exit 4").code == 4
    # ...but its children die of them as anywhere else.
    assert run_on(busybox_rootfs, "sh -c 'kill -9 $$'; exit $?").code == 137


def test_step_leads_its_own_session(busybox_rootfs: Path, run_on) -> None:
    # As runc's first process: PID 1 leads its session and process group, so `kill 0`
    # (common in `trap 'kill 0' EXIT`) ends the step's own processes and nothing else.
    result = run_on(busybox_rootfs, "cut -d' ' -f1,5,6 /proc/$$/stat; sleep 30 & kill 0; "
                                    "echo survived $?")
    assert (result.code, result.output) == (0, "1 1 1\nsurvived 0\n")


def test_missing_executable_is_a_clear_error(busybox_rootfs: Path, run_on) -> None:
    with pytest.raises(ExecError, match=r'exec: "nosuchtool": executable file not found in \$PATH'):
        run_on(busybox_rootfs, ("nosuchtool", "--help"))


def test_sees_only_the_image_root(busybox_rootfs: Path, run_on) -> None:
    result = run_on(busybox_rootfs, "ls -a /; echo ---; tr '\\0' ' ' < /proc/1/cmdline; echo;"
                                    " echo ---; ls /proc | grep -c '^[0-9]'")
    listing, cmdline, count = result.output.split("---\n")
    expected = set(os.listdir(busybox_rootfs)) | {".", "..", "proc", "dev", "sys"}
    assert set(listing.split()) == expected
    assert cmdline.startswith("/bin/sh -c ls -a /")
    # Our sh, ls's pipeline partner and grep: a handful, not the host's hundreds.
    assert int(count) < 6


def test_sys_is_read_only_and_proc_is_fresh(busybox_rootfs: Path, run_on) -> None:
    result = run_on(busybox_rootfs, "grep -E ' /(sys|proc) ' /proc/mounts; "
                                    "mkdir /sys/kernel/x 2>&1 || echo refused")
    lines = result.output.splitlines()
    assert any(line.startswith("sysfs /sys sysfs ro,") for line in lines)
    assert any(line.startswith("proc /proc proc rw,nosuid,nodev,noexec") for line in lines)
    assert "refused" in result.output


def test_dev_is_minimal(busybox_rootfs: Path, run_on) -> None:
    result = run_on(busybox_rootfs, "ls /dev; echo ---; ls -l /dev/fd /dev/ptmx /dev/stdin | "
                                    "sed 's/.* -> //'; echo ---; grep ' /dev' /proc/mounts | "
                                    "cut -d' ' -f2,3; echo x > /dev/null && echo nullok; "
                                    "head -c 4 /dev/zero | od -An -tx1")
    names, links, rest = result.output.split("---\n")
    assert set(names.split()) == {"fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm",
                                  "stderr", "stdin", "stdout", "tty", "urandom", "zero"}
    assert links.split() == ["/proc/self/fd", "pts/ptmx", "/proc/self/fd/0"]
    mounts = rest.splitlines()
    assert {"/dev tmpfs", "/dev/pts devpts", "/dev/shm tmpfs"} <= set(mounts)
    assert "nullok" in rest and "00 00 00 00" in rest


def test_etc_files_are_provided_then_absent_from_the_layer(busybox_rootfs: Path, run_on) -> None:
    result = run_on(busybox_rootfs, "cat /etc/resolv.conf; echo ---; cat /etc/hosts; echo ---;"
                                    " hostname; ls /etc/hostname 2>&1",
                    hostname="myhost", extra_hosts=(("db", "10.1.2.3"),))
    resolv, hosts, hostname = result.output.split("---\n")
    assert resolv == Path("/etc/resolv.conf").read_text()
    assert "127.0.0.1\tlocalhost myhost" in hosts and "10.1.2.3\tdb" in hosts
    # BuildKit provides no /etc/hostname: only the UTS name is the step's
    assert hostname.splitlines() == ["myhost", "ls: /etc/hostname: No such file or directory"]
    # /etc of the image was copied up only to hold the mount points: all of it is gone. The
    # runtime's own mount points stay, as BuildKit leaves them (busybox_rootfs has none).
    assert sorted(p.name for p in result.upper.iterdir()) == ["dev", "proc", "sys"]
    changed = run_on(busybox_rootfs, "echo x > /etc/new")
    assert sorted(str(p.relative_to(changed.upper)) for p in changed.upper.rglob("*")) == [
        "dev", "etc", "etc/new", "proc", "sys"]
    assert (changed.upper / "etc").stat().st_mtime_ns != (busybox_rootfs / "etc").stat().st_mtime_ns


def test_mount_points_left_in_an_image_without_them(tmp_path: Path, run_on) -> None:
    bare = tmp_path / "bare"
    (bare / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", bare / "bin" / "busybox")
    (bare / "bin" / "sh").symlink_to("busybox")
    result = run_on(bare, "/bin/busybox hostname; /bin/busybox ls /", mounts=())
    assert result.code == 0
    assert result.output.split() == ["buildkitsandbox", "bin", "dev", "etc", "proc", "sys"]
    # As BuildKit: its stub cleaner takes out /etc/hosts, /etc/resolv.conf (and /etc, made
    # only for them) but not runc's /dev, /proc and /sys, which stay as empty directories.
    assert sorted(p.name for p in result.upper.iterdir()) == ["dev", "proc", "sys"]
    for name in ("dev", "proc", "sys"):
        st = (result.upper / name).stat()
        assert (oct(st.st_mode), st.st_uid, st.st_gid) == (oct(0o40755), 0, 0)
        assert list((result.upper / name).iterdir()) == []


def test_etc_hostname_is_the_images_and_writable(busybox_rootfs: Path, tmp_path: Path,
                                                run_on) -> None:
    # As BuildKit, which binds only /etc/resolv.conf and /etc/hosts: a step reads the
    # image's /etc/hostname and may rewrite it (`echo myhost > /etc/hostname`), and the
    # new content is part of the layer.
    top = tmp_path / "top"
    (top / "etc").mkdir(parents=True)
    (top / "etc" / "hostname").write_text("imagehost\n")
    result = run_on([top, busybox_rootfs], "cat /etc/hostname; hostname; "
                                           "echo newhost > /etc/hostname && echo written")
    assert result.output == "imagehost\nbuildkitsandbox\nwritten\n"
    assert (result.upper / "etc" / "hostname").read_text() == "newhost\n"


def test_default_hostname_is_buildkits(busybox_rootfs: Path, run_on) -> None:
    assert run_on(busybox_rootfs, "hostname").output == "buildkitsandbox\n"
    assert socket.gethostname() != "buildkitsandbox"


def test_network_none_has_only_loopback(busybox_rootfs: Path, run_on) -> None:
    none = run_on(busybox_rootfs, "ls /sys/class/net; cat /sys/class/net/lo/operstate; "
                                  "ping -c1 -W1 127.0.0.1 >/dev/null && echo pingok",
                  network="none")
    assert none.output.split() == ["lo", "unknown", "pingok"]
    default = run_on(busybox_rootfs, "ls /sys/class/net", network="default")
    assert sorted(default.output.split()) == sorted(os.listdir("/sys/class/net"))
    assert len(default.output.split()) > 1


# Supplementary groups: the primary gid first, then the /etc/group memberships when no
# group is named (BuildKit's ensureAdditionalGids on top of runc's rule).
@pytest.mark.parametrize(("user", "expected"), [
    ("", "uid=0(root) gid=0(root) groups=0(root)"),
    ("app", "uid=1000(app) gid=1000(app) groups=1000(app),1001(extra)"),
    ("1000", "uid=1000(app) gid=1000(app) groups=1000(app),1001(extra)"),
    ("1000:1000", "uid=1000(app) gid=1000(app) groups=1000(app)"),
    ("app:extra", "uid=1000(app) gid=1001(extra) groups=1001(extra)"),
    ("app:1001", "uid=1000(app) gid=1001(extra) groups=1001(extra)"),
    ("nobody", "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)"),
    ("4242", "uid=4242 gid=0(root) groups=0(root)"),
    ("4242:77", "uid=4242 gid=77 groups=77"),
])
def test_users(busybox_rootfs: Path, run_on, user: str, expected: str) -> None:
    assert run_on(busybox_rootfs, "id", user=user).output.strip() == expected


def test_unknown_user_is_a_clear_error(busybox_rootfs: Path, run_on) -> None:
    with pytest.raises(ExecError, match="^unable to find user ghost: no matching entries in "
                                        "passwd file$"):
        run_on(busybox_rootfs, "id", user="ghost")


def test_environment_defaults(busybox_rootfs: Path, run_on) -> None:
    out = run_on(busybox_rootfs, "echo $PATH; echo $HOME; echo $FOO", env=("FOO=bar",)).output
    assert out.split() == ["/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                           "/root", "bar"]
    out = run_on(busybox_rootfs, "echo $PATH $HOME", env=("PATH=/bin",), user="app").output
    assert out.split() == ["/bin", "/home/app"]
    # runc sets HOME from passwd when it is empty too (`ENV HOME=`), "/" for a uid without
    # an entry; a HOME the image sets is kept
    out = run_on(busybox_rootfs, "echo \"[$HOME]\"", env=("HOME=",), user="app").output
    assert out == "[/home/app]\n"
    out = run_on(busybox_rootfs, "echo \"[$HOME]\"", env=("HOME=",), user="4242").output
    assert out == "[/]\n"
    assert run_on(busybox_rootfs, "echo $HOME", env=("HOME=/custom",)).output == "/custom\n"


def test_workdir_is_created_owned_by_root(busybox_rootfs: Path, run_on) -> None:
    result = run_on(busybox_rootfs, "pwd", cwd="/srv/app/src", user="app")
    assert result.output == "/srv/app/src\n"
    made = result.upper / "srv" / "app" / "src"
    assert made.is_dir()
    st = made.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o755)


def test_umask_is_0022(busybox_rootfs: Path, run_on) -> None:
    result = run_on(busybox_rootfs, "touch /tmp/f; mkdir /tmp/d; stat -c %a /tmp/f /tmp/d")
    assert result.output.split() == ["644", "755"]
    assert (result.upper / "tmp" / "f").stat().st_mode & 0o777 == 0o644


def test_capabilities_are_dockers_default_set(busybox_rootfs: Path, run_on) -> None:
    out = run_on(busybox_rootfs, "grep -E '^(Cap|NoNewPrivs)' /proc/self/status").output
    fields = dict(line.split(":\t") for line in out.splitlines())
    want = f"{capability_mask():016x}"
    assert want == "00000000a80425fb"
    assert (fields["CapEff"], fields["CapPrm"], fields["CapBnd"]) == (want, want, want)
    assert (fields["CapInh"], fields["CapAmb"], fields["NoNewPrivs"]) == ("0" * 16, "0" * 16, "0")
    app = run_on(busybox_rootfs, "grep -E '^Cap(Eff|Bnd)' /proc/self/status", user="app").output
    assert app.split() == ["CapEff:", "0" * 16, "CapBnd:", want]


def test_host_mounts_are_untouched(busybox_rootfs: Path, tmp_path: Path, run_on) -> None:
    from builder.executor import Mount

    before = Path("/proc/self/mountinfo").read_text()
    result = run_on(busybox_rootfs, "grep -c . /proc/mounts; mount -t tmpfs t /mnt || echo no",
                    mounts=(Mount("tmpfs", "/scratch"), Mount("bind", "/src", source=tmp_path)))
    # A build step has no CAP_SYS_ADMIN: it cannot mount either.
    assert result.output.splitlines()[-1] == "no"
    assert Path("/proc/self/mountinfo").read_text() == before


def test_seccomp_refuses_namespaces_and_keyrings_as_buildkits_profile(busybox_rootfs: Path,
                                                                       run_on) -> None:
    # BuildKit runs RUN under the default seccomp profile: with docker's capabilities a step
    # can still make a user namespace (and so mount in it) unless seccomp says no.
    probe = ("grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; "
             "unshare -U true 2>&1 || echo refused-user; unshare -n true 2>&1 || echo refused-net; "
             "(sleep 0 & wait) && echo fork-ok")
    out = run_on(busybox_rootfs, probe).output
    assert "Seccomp:\t2" in out and "NoNewPrivs:\t0" in out
    assert "refused-user" in out and "refused-net" in out and "fork-ok" in out
    app = run_on(busybox_rootfs, "unshare -U true 2>&1 || echo refused", user="app").output
    assert "Operation not permitted" in app and "refused" in app
    # --security=insecure is seccomp=unconfined, as in BuildKit
    insecure = run_on(busybox_rootfs, probe, insecure=True).output
    assert "Seccomp:\t0" in insecure and "refused-user" not in insecure
