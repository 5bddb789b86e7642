"""The benchmark's infrastructure: measuring one whole process (wall time and peak memory),
a docker-registry on a free loopback port, a private dockerd, and the three builders
(pybuild, buildah, docker's BuildKit) behind one small interface.

Peak memory is ``ru_maxrss`` from ``os.wait4`` (the largest process of the waited-for
tree). A docker build runs in dockerd, so for docker the daemon's growth is added: its
peak RSS is reset through ``/proc/PID/clear_refs`` before the build and read (VmHWM)
after, and what it grew above its resident size before the build is counted.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "BenchError",
    "Buildah",
    "Builder",
    "Docker",
    "Dockerd",
    "PyBuild",
    "Registry",
    "Sample",
    "free_port",
    "measure",
]

DOCKER = "/usr/bin/docker"  # Debian's 20.10 client: BuildKit built in (a newer one needs buildx)


class BenchError(RuntimeError):
    """A step of the benchmark that must work did not; the message says which and why."""


@dataclass(frozen=True)
class Sample:
    seconds: float
    peak_rss: int  # bytes
    ok: bool


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_peak(pid: int) -> None:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


def measure(argv: Sequence[str], *, log: Path, cwd: Path | None = None,
            env: dict[str, str] | None = None, daemons: Sequence[int] = ()) -> Sample:
    """Run ``argv`` to its end; whole-process wall time and peak RSS (plus daemons' growth)."""
    before = {}
    for pid in daemons:
        _reset_peak(pid)
        before[pid] = _status_kib(pid, "VmRSS")
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak = usage.ru_maxrss * 1024
    for pid in daemons:
        peak += max(0, _status_kib(pid, "VmHWM") - before[pid]) * 1024
    return Sample(seconds, peak, proc.returncode == 0)


def check(argv: Sequence[str], *, log: Path, timeout: float = 900, **kw: object) -> str:
    """Run a set-up command (not measured); its failure stops the benchmark with its output."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          check=False, **kw)  # type: ignore[call-overload]
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(argv)}\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({done.returncode}):\n"
                         f"{(done.stdout + done.stderr)[-2000:]}")
    return done.stdout  # type: ignore[no-any-return]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Ends a server this benchmark started: SIGTERM, then SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Registry:
    """Debian's docker-registry on 127.0.0.1:free port; ``restart_empty()`` gives a new,
    empty registry (the push workload wants an empty one for every run)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.proc: subprocess.Popen[bytes] | None = None
        self.host = ""
        self.generation = 0

    def start(self) -> None:
        self.generation += 1
        root = self.base / f"storage{self.generation}"
        port = free_port()
        config = self.base / "config.yml"
        self.base.mkdir(parents=True, exist_ok=True)
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n")
        with open(self.base / "registry.log", "ab") as log:
            self.proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log,
                                         stderr=log)
        self.host = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("docker-registry did not start: "
                                 + (self.base / "registry.log").read_text()[-1500:])
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, 10)
            self.proc = None
        shutil.rmtree(self.base / f"storage{self.generation}", ignore_errors=True)

    def restart_empty(self) -> None:
        self.stop()
        self.start()


class Dockerd:
    """A private dockerd: own data-root, exec-root, socket and containerd namespace."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.sock = base / "docker.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        with open(self.base / "dockerd.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
                 "--data-root", str(self.base / "data"), "--exec-root", str(self.base / "exec"),
                 "--pidfile", str(self.base / "dockerd.pid"), "-H", self.host,
                 "--containerd-namespace", "pybuild-bench",
                 "--containerd-plugins-namespace", "pybuild-bench-plugins"],
                stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if self.sock.exists() and subprocess.run(
                    [DOCKER, "-H", self.host, "version"], capture_output=True,
                    timeout=20, check=False).returncode == 0:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("dockerd did not start: "
                                 + (self.base / "dockerd.log").read_text(errors="replace")[-1500:])
            time.sleep(0.2)

    def pids(self) -> list[int]:
        """dockerd and the containerd it started (BuildKit runs inside dockerd)."""
        if self.proc is None:
            return []
        pids = [self.proc.pid]
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            pids += [int(k) for k in kids]
        except OSError:
            pass
        return pids

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, 30)
            self.proc = None


@dataclass
class Builder:
    """One builder: how to build a context (cold = without cache) and to pull the base."""

    name: str
    work: Path
    log: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def build_argv(self, context: Path, tag: str, *, cold: bool) -> list[str]:
        raise NotImplementedError

    def daemons(self) -> list[int]:
        return []

    def build(self, context: Path, tag: str, *, cold: bool = False) -> Sample:
        return measure(self.build_argv(context, tag, cold=cold), log=self.log, env=self.env,
                       daemons=self.daemons())

    def prepare(self, base_ref: str) -> None:
        """Make the base image available (not measured): cold builds start with it pulled."""


class PyBuild(Builder):
    """pybuild run by ``python``: the interpreter of a virtual environment it was installed
    into (``install_venv``), whose `pybuild` command runs it, or the bench's own."""

    def __init__(self, work: Path, log: Path, python: str = sys.executable) -> None:
        super().__init__("pybuild", work, log)
        self.root = work / "store"
        self.python = python
        # Installed Python programs keep their compiled bytecode; an environment that says
        # PYTHONDONTWRITEBYTECODE=1 would have every run compile every module again.
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def cmd(self, *args: str) -> list[str]:
        # The `pybuild` command installed beside the interpreter, as a user runs it; the
        # bench's own interpreter (--install here) has it elsewhere, if at all: -m there.
        program = Path(self.python).with_name("pybuild")
        if program.is_file() and os.access(program, os.X_OK):
            return [str(program), *args]
        return [self.python, "-m", "builder", *args]

    def build_argv(self, context: Path, tag: str, *, cold: bool, extra: Sequence[str] = ()) -> list[str]:
        return self.cmd("build", "--root", str(self.root), "--progress", "plain", "-t", tag,
                        *(["--no-cache"] if cold else []), *extra, str(context))

    def build(self, context: Path, tag: str, *, cold: bool = False,
              extra: Sequence[str] = ()) -> Sample:
        return measure(self.build_argv(context, tag, cold=cold, extra=extra), log=self.log,
                       env=self.env)

    def prepare(self, base_ref: str) -> None:
        check(self.cmd("pull", "--root", str(self.root), base_ref), log=self.log)


class Buildah(Builder):
    """buildah bud --isolation chroot --storage-driver overlay --layers, its own store."""

    def __init__(self, work: Path, log: Path) -> None:
        super().__init__("buildah", work, log)
        self.env = {**os.environ, "BUILDAH_ISOLATION": "chroot"}

    def cmd(self, *args: str) -> list[str]:
        return ["buildah", "--root", str(self.work / "root"), "--runroot", str(self.work / "run"),
                "--storage-driver", "overlay", *args]

    def build_argv(self, context: Path, tag: str, *, cold: bool) -> list[str]:
        return self.cmd("bud", "--isolation", "chroot", "--layers", "--tls-verify=false",
                        "--network", "host", "--pull=false", "-q",
                        *(["--no-cache"] if cold else []), "-t", tag, str(context))

    def prepare(self, base_ref: str) -> None:
        check(self.cmd("pull", "--tls-verify=false", "-q", base_ref), log=self.log, env=self.env)


class Docker(Builder):
    """docker 20.10 with DOCKER_BUILDKIT=1 against the private dockerd."""

    def __init__(self, work: Path, log: Path, daemon: Dockerd) -> None:
        super().__init__("docker", work, log)
        self.daemon = daemon
        self.env = {**os.environ, "DOCKER_BUILDKIT": "1"}

    def cmd(self, *args: str) -> list[str]:
        return [DOCKER, "-H", self.daemon.host, *args]

    def build_argv(self, context: Path, tag: str, *, cold: bool) -> list[str]:
        return self.cmd("build", "--network=host", "--progress=plain", "-t", tag,
                        *(["--no-cache"] if cold else []), str(context))

    def daemons(self) -> list[int]:
        return self.daemon.pids()

    def prepare(self, base_ref: str) -> None:
        check(self.cmd("pull", "-q", base_ref), log=self.log, env=self.env)


def _binfmt_state() -> str:
    """Whether qemu emulators are registered: docker's BuildKit probes them on every build
    (about 0.3 s here), which changes its times."""
    status = Path("/proc/sys/fs/binfmt_misc/status")
    if not status.exists():
        return "binfmt_misc not mounted"
    if status.read_text().strip() != "enabled":
        return "binfmt_misc disabled"
    qemu = sorted(p.name for p in status.parent.glob("qemu-*"))
    return f"{len(qemu)} qemu entries enabled" if qemu else "none registered"


SYSTEM_PYTHON = "/usr/bin/python3"


def venv_interpreter(given: str | None) -> str:
    """The interpreter the bench's virtual environment is made from: ``given``, else the
    distribution's ``python3`` (what a user of a fresh Debian machine runs, and what the
    peers are measured as: the distribution's builds), if it is 3.11 or newer and can make
    a virtual environment with pip; else the bench's own."""
    if given:
        return given
    if system_python_runs("import sys, venv, ensurepip; "
                          "sys.exit(0 if sys.version_info >= (3, 11) else 1)"):
        return SYSTEM_PYTHON
    return sys.executable


def system_python_runs(code: str) -> bool:
    """Whether the distribution's python3 is there and runs ``code`` without error."""
    return os.path.exists(SYSTEM_PYTHON) and subprocess.run(
        [SYSTEM_PYTHON, "-c", code], capture_output=True, check=False).returncode == 0


def install_venv(venv: Path, source: Path, log: Path, interpreter: str = sys.executable) -> str:
    """Install pybuild from ``source`` (not editable) into a new virtual environment made by
    ``interpreter``, as a user installs a Python program (pipx does the same); its
    interpreter. The bench's own interpreter may load more at every start: its
    site-packages' .pth files (an editable install's finder, hooks of the machine) run
    before any program does."""
    check([interpreter, "-m", "venv", str(venv)], log=log)
    python = str(venv / "bin" / "python3")
    check([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)], log=log)
    return python


def versions(builders: Sequence[Builder]) -> dict[str, str]:
    """Versions of the peers and tools, for RESULTS.md."""
    def first_line(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except OSError:
            return "missing"
        return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else "?"

    out = {"bench's python": sys.version.split()[0], "kernel": os.uname().release,
           "debian": Path("/etc/debian_version").read_text().strip()
           if Path("/etc/debian_version").exists() else "?",
           "cpus": str(os.cpu_count()), "binfmt_misc emulators": _binfmt_state()}
    for b in builders:
        if isinstance(b, PyBuild):
            where = os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parents[1])
            done = subprocess.run([b.python, "-c", "import builder; print(builder.__file__)"],
                                  capture_output=True, text=True, check=False, env=b.env)
            rev = subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]),
                                  "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 check=False).stdout.strip()
            at = f"repository at {rev}" if rev else "the suite is not in a git checkout"
            out["pybuild"] = f"{done.stdout.strip() or where} ({at})"
            report = "import sys; print(sys.version.split()[0], sys._base_executable)"
            done = subprocess.run([b.python, "-c", report],
                                  capture_output=True, text=True, check=False, env=b.env)
            out["pybuild's python"] = done.stdout.strip() or "?"
        if isinstance(b, Buildah):
            out["buildah"] = first_line(["buildah", "--version"])
        if isinstance(b, Docker):
            out["docker"] = first_line(b.cmd("version", "--format",
                                             "client {{.Client.Version}} server {{.Server.Version}}"))
    for tool in (["skopeo", "--version"], ["docker-registry", "--version"], ["zstd", "--version"],
                 ["gzip", "--version"]):
        if shutil.which(tool[0]):
            out[tool[0]] = first_line(tool)
    try:
        import zstandard
        out["python-zstandard"] = zstandard.__version__
    except ImportError:
        pass
    return out


def tempdir(parent: str | None, prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def load_json(path: Path) -> object:
    return json.loads(path.read_text())
