"""pybuild's benchmark suite (issue 7): pybuild, buildah and docker's BuildKit side by side on
the same machine, in the same run, from the same base image served by a loopback registry.

    python3 bench/suite.py [--reps N] [--only WORKLOAD]... [--out DIR] [--smoke]

Workloads: hello, bigctx, multistage, heavyrun (each cold / warm / incremental), export
(one 1 GiB layer to an OCI archive, gzip and zstd, against ``tar | gzip`` and
``tar | zstd -T0`` on the same bytes) and push (the bigctx image to an empty registry,
against ``skopeo copy``). Writes results.md, results.json and ratios.png into --out.
``--smoke``: tiny sizes, one run, pybuild only (no peers), for CI.

pybuild is installed from this repository into a new virtual environment in the work
folder and run from there, as a user installs it (``--install here`` runs the pybuild
that this interpreter imports instead, which ``--smoke`` does). The environment is made
by the distribution's python3, as the peers are the distribution's builds
(``--venv-python`` names another).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import (
    SYSTEM_PYTHON,
    BenchError,
    Buildah,
    Builder,
    Docker,
    Dockerd,
    PyBuild,
    Registry,
    Sample,
    check,
    install_venv,
    measure,
    system_python_runs,
    tempdir,
    venv_interpreter,
    versions,
)
from report import Row, write_json, write_markdown, write_png
from workloads import (
    BUILD_WORKLOADS,
    EXPORT_WORKLOAD,
    FULL,
    SMOKE,
    Sizes,
    change_file,
    make_blob_file,
    write_context,
)

ROOTFS_TAR = Path("/var/cache/pybuild-tests/debian-bookworm-minbase-python3.tar")
BASE_NAME = "bench/debian:bookworm-python"
MEMORY_LIMIT_MB = 250.0
ALL = [*BUILD_WORKLOADS, "export", "push"]
APT = {"buildah": "buildah", "dockerd": "docker.io", "docker-registry": "docker-registry",
       "skopeo": "skopeo", "zstd": "zstd"}
TARGETS = {("warm", "bigctx"): 0.1, ("incremental", "bigctx"): 0.5}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def install_missing(smoke: bool) -> None:
    """apt-get install the peers and tools that are missing (as root, full runs only)."""
    wanted = ["docker-registry", "skopeo", "zstd"] if smoke else list(APT)
    missing = sorted({APT[tool] for tool in wanted if not shutil.which(tool)})
    if (not smoke and os.path.exists(SYSTEM_PYTHON)
            and not system_python_runs("import venv, ensurepip")):
        missing.append("python3-venv")  # Debian's venv for its python3 (see venv_interpreter)
    if not missing:
        return
    if os.geteuid() != 0 or smoke:
        log(f"missing (not installed: not root or --smoke): {' '.join(missing)}")
        return
    log(f"apt-get install {' '.join(missing)}")
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.smoke: bool = args.smoke
        self.sizes: Sizes = SMOKE if self.smoke else FULL
        self.reps: int = 1 if self.smoke else args.reps
        self.warmup: int = 0 if self.smoke else 1
        self.work = tempdir(args.work, "pybuild-bench.")
        self.logfile = self.work / "bench.log"
        self.rows: list[Row] = []
        self.registry = Registry(self.work / "registry")
        self.dockerd: Dockerd | None = None
        self.builders: list[Builder] = []
        self.base_ref = ""

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        if not ROOTFS_TAR.exists():
            raise BenchError(f"{ROOTFS_TAR} is missing: run the tests once (tests/fixtures/rootfs.py "
                             "makes it with debootstrap) or `bash .ci/demo`")
        self.registry.start()
        self.base_ref = f"{self.registry.host}/{BASE_NAME}"
        python = self.args.python or sys.executable
        if self.args.install == "venv" and not self.args.python:
            interpreter = venv_interpreter(self.args.venv_python)
            log(f"installing pybuild from {self.args.source} into a virtual environment "
                f"made by {interpreter}")
            python = install_venv(self.work / "venv", self.args.source, self.logfile, interpreter)
        pybuild = PyBuild(self.work / "pybuild", self.logfile, python)
        seed = str(self.work / "seed-store")
        log(f"registry on {self.registry.host}; the Debian python3 base: {self.base_ref}")
        if self.smoke:  # pybuild alone: its store can hold the base directly (no round trip)
            check(pybuild.cmd("import", "--root", str(pybuild.root), str(ROOTFS_TAR),
                              self.base_ref), log=self.logfile)
            self.builders = [pybuild]
            return
        check(pybuild.cmd("import", "--root", seed, str(ROOTFS_TAR), self.base_ref), log=self.logfile)
        check(pybuild.cmd("push", "--root", seed, "-q", self.base_ref), log=self.logfile)
        shutil.rmtree(seed, ignore_errors=True)
        self.builders = [pybuild]
        self.builders.append(Buildah(self.work / "buildah", self.logfile))
        # a short path: unix socket paths are limited to 108 bytes
        self.dockerd = Dockerd(tempdir("/tmp", "pbb."))
        self.dockerd.start()
        self.builders.append(Docker(self.work / "docker", self.logfile, self.dockerd))
        for b in self.builders:
            log(f"{b.name}: pulling the base")
            b.prepare(self.base_ref)

    def teardown(self) -> None:
        if self.dockerd is not None:
            self.dockerd.stop()
            shutil.rmtree(self.dockerd.base, ignore_errors=True)
        self.registry.stop()
        if not self.args.keep:
            for b in self.builders:  # buildah's overlay store may hold mounts: ask it first
                if isinstance(b, Buildah):
                    subprocess.run(b.cmd("rm", "--all"), capture_output=True, check=False)
                    subprocess.run(b.cmd("rmi", "--all", "--force"), capture_output=True, check=False)
            _unmount_below(self.work)
            shutil.rmtree(self.work, ignore_errors=True)

    # ------------------------------------------------------------------ runs
    def paired(self, row: Row, runners: dict[str, Callable[[], Sample]],
               before: Callable[[int], None] | None = None, *, warmup: int = 0) -> None:
        """``warmup`` runs then reps; in each run every runner once, the order rotating,
        so that the ratios pair runs made at the same moment."""
        names = list(runners)
        for run in range(warmup + self.reps):
            if before is not None:
                before(run)
            order = names[run % len(names):] + names[:run % len(names)]
            for name in order:
                sample = runners[name]()
                if run < warmup:
                    continue
                if not sample.ok:
                    row.failed[name] = row.failed.get(name, 0) + 1
                row.seconds.setdefault(name, []).append(sample.seconds)
                row.peak_mb.setdefault(name, []).append(sample.peak_rss / 2**20)
        self.rows.append(row)
        summary = ", ".join(f"{n} {row.median(n):.2f}s" for n in row.seconds if row.median(n) is not None)
        log(f"  {row.workload} {row.mode}: {summary}")

    def build_workload(self, name: str) -> None:
        workload = BUILD_WORKLOADS[name]
        ctx = write_context(workload, self.work / "ctx" / name, self.base_ref, self.sizes)
        tag = f"bench/{name}"
        log(f"{name}: context ready in {ctx}")
        # The warm-up: the first build of all fills each cache (not measured).
        for b in self.builders if not self.smoke else []:
            if not b.build(ctx, tag).ok:
                raise BenchError(f"{b.name} could not build {name}; see {self.logfile}")

        def runners(mode: str) -> dict[str, Callable[[], Sample]]:
            out: dict[str, Callable[[], Sample]] = {
                b.name: (lambda b=b: b.build(ctx, tag, cold=mode == "cold")) for b in self.builders}
            for ref, argv in self.floors(name, mode, ctx).items():
                out[ref] = lambda argv=argv: measure(argv, log=self.logfile, env=self.builders[0].env)
            return out

        for mode in ("cold", "warm", "incremental"):
            row = Row(name, mode, target=TARGETS.get((mode, name), 1.0))
            before = (lambda run: change_file(ctx, workload.touch, run)) if mode == "incremental" else None
            self.paired(row, runners(mode), before)
        if name == "heavyrun":
            self.heavy_reference(ctx)

    def floors(self, name: str, mode: str, ctx: Path) -> dict[str, list[str]]:
        """What any Python builder pays at least, measured beside the rows where pybuild's
        time is close to it: the interpreter's start (the same one and environment that
        runs pybuild), and for the warm big context that start plus a stat of every file
        of the context by `find` (in C), which is what telling "nothing changed" takes
        without a process that stays running."""
        if self.smoke:
            return {}
        start = [self.builders[0].python, "-c", "pass"]  # type: ignore[attr-defined]
        if name == "hello":
            return {"ref:python start": start}
        if name == "bigctx" and mode == "warm":
            walk = f"find {shlex.quote(str(ctx))} -printf '%i %s %T@ %C@ %m %U %G %p\\n' | sha256sum"
            return {"ref:python start + find": ["sh", "-c", f"{shlex.join(start)} && {walk}"]}
        return {}

    def heavy_reference(self, ctx: Path) -> None:
        """The physical floor of the heavy RUN: the same cp -a and rm on the host."""
        stdlib = Path("/var/cache/pybuild-tests/debian-bookworm-minbase-python3/usr/lib/python3.11")
        if not stdlib.is_dir():
            return
        dest = self.work / "cp-ref"
        copies = " ".join(str(i) for i in range(self.sizes.stdlib_copies))
        script = (f"rm -rf {dest} && mkdir -p {dest} && for i in {copies}; do "
                  f"cp -a {stdlib} {dest}/stdlib$i; done && rm -rf {dest}/stdlib0")
        row = Row("heavyrun", "cp -a (host)", target=None)
        self.paired(row, {"ref:cp -a": lambda: measure(["sh", "-c", script], log=self.logfile)},
                    warmup=self.warmup)
        shutil.rmtree(dest, ignore_errors=True)

    def export_workload(self) -> None:
        pybuild = self.builders[0]
        assert isinstance(pybuild, PyBuild)
        ctx = write_context(EXPORT_WORKLOAD, self.work / "ctx" / "export", self.base_ref, self.sizes)
        tag = "bench/export"
        log(f"export: building the {self.sizes.export_mib} MiB layer")
        if not pybuild.build(ctx, tag).ok:
            raise BenchError(f"pybuild could not build the export workload; see {self.logfile}")
        same = self.work / "export-bytes"  # the same bytes on the host, for the raw pipelines
        same.mkdir()
        make_blob_file(same / "layer.bin", self.sizes.export_mib << 20, seed=0)
        buildah = next((b for b in self.builders if isinstance(b, Buildah)), None)
        if not self.args.export_peers:
            buildah = None
        if buildah is not None and not buildah.build(ctx, tag).ok:
            raise BenchError(f"buildah could not build the export workload; see {self.logfile}")
        out = self.work / "export-out"
        out.mkdir()
        raw = {"gzip": "gzip -6 -n", "zstd": "zstd -3 -T0 -q"}
        for comp, pipe in raw.items():
            archive = out / f"pybuild-{comp}.tar"

            def ours(comp: str = comp, archive: Path = archive) -> Sample:
                _forget_top_blob(pybuild.root, archive)
                return pybuild.build(ctx, tag, extra=("--compression", comp, "-o",
                                                     f"type=oci,dest={archive}"))

            runners: dict[str, Callable[[], Sample]] = {"pybuild": ours}
            runners[f"ref:tar | {pipe.split()[0]}"] = lambda pipe=pipe, comp=comp: measure(
                ["sh", "-c", f"tar -C {same} -cf - . | {pipe} > {out}/raw.{comp}"], log=self.logfile)
            if buildah is not None:
                runners["buildah"] = lambda comp=comp, b=buildah: measure(
                    b.cmd("push", "-q", "--compression-format", comp, tag,
                          f"oci-archive:{out}/buildah-{comp}.tar"), log=self.logfile, env=b.env)
            row = Row("export", comp, target=1.25, against=f"ref:tar | {pipe.split()[0]}")
            # the warm-up run also drops the blob the set-up build made
            self.paired(row, runners, warmup=1)
            for leftover in out.iterdir():
                leftover.unlink()
        shutil.rmtree(same, ignore_errors=True)

    def push_workload(self) -> None:
        pybuild = self.builders[0]
        assert isinstance(pybuild, PyBuild)
        if "bigctx" not in {r.workload for r in self.rows}:
            ctx = write_context(BUILD_WORKLOADS["bigctx"], self.work / "ctx" / "bigctx",
                                self.base_ref, self.sizes)
            if not pybuild.build(ctx, "bench/bigctx").ok:
                raise BenchError(f"pybuild could not build bigctx; see {self.logfile}")
        layout_tar = self.work / "bigctx.oci.tar"
        check(pybuild.cmd("save", "--root", str(pybuild.root), "-o", str(layout_tar), "bench/bigctx"),
              log=self.logfile)
        layout = self.work / "bigctx-layout"
        with tarfile.open(layout_tar) as tar:
            tar.extractall(layout)
        layout_tar.unlink()
        target = Registry(self.work / "push-registry")
        target.start()
        policy = self.work / "policy.json"
        policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        try:
            def ours() -> Sample:
                target.restart_empty()
                dest = f"{target.host}/bench/bigctx:latest"
                check(pybuild.cmd("tag", "--root", str(pybuild.root), "bench/bigctx", dest),
                      log=self.logfile)
                return measure(pybuild.cmd("push", "--root", str(pybuild.root), "-q", dest),
                               log=self.logfile)

            def skopeo() -> Sample:
                target.restart_empty()
                return measure(["skopeo", "--policy", str(policy), "copy", "-q",
                                "--dest-tls-verify=false", f"oci:{layout}",
                                f"docker://{target.host}/bench/bigctx:latest"], log=self.logfile)

            self.paired(Row("push", "empty registry", target=1.0), {"pybuild": ours, "skopeo": skopeo},
                        warmup=self.warmup)
        finally:
            target.stop()

    def run(self, only: Sequence[str], out: Path, started: datetime.datetime) -> None:
        for name in only:
            log(f"== {name}")
            if name in BUILD_WORKLOADS:
                self.build_workload(name)
            elif name == "export":
                self.export_workload()
            elif name == "push":
                self.push_workload()
            self.write(out, started)  # after each workload: a long run interrupted keeps its rows

    def write(self, out: Path, started: datetime.datetime) -> None:
        out.mkdir(parents=True, exist_ok=True)
        meta: dict[str, object] = {
            "date": started.strftime("%Y-%m-%d %H:%M UTC"), "reps": self.reps,
            "warmup": self.warmup, "smoke": self.smoke, "sizes": self.sizes.__dict__,
            "memory_limit_mb": MEMORY_LIMIT_MB, "versions": versions(self.builders)}
        write_markdown(out / "results.md", self.rows, meta, MEMORY_LIMIT_MB)
        write_json(out / "results.json", self.rows, meta)
        write_png(out / "ratios.png", self.rows)
        log(f"wrote {out}/results.md, results.json, ratios.png ({len(self.rows)} rows)")


def _unmount_below(root: Path) -> None:
    """containers-storage bind-mounts buildah's overlay folder on itself: unmount what is
    mounted below our work folder (deepest first, lazily: it is our own bind) before removing it."""
    try:
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:
        return
    prefix = str(root).rstrip("/") + "/"
    for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _forget_top_blob(store: Path, archive: Path) -> None:
    """Drop the compressed blob the last export made of the top layer, so that every run
    measures compressing it (pybuild keeps compressed blobs; a second export would copy)."""
    if not archive.exists():
        return
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest_digest = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(tar.extractfile(f"blobs/sha256/{manifest_digest}"))  # type: ignore[arg-type]
    top = manifest["layers"][-1]["digest"].split(":")[1]
    (store / "blobs" / "sha256" / top).unlink(missing_ok=True)
    archive.unlink()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 run, pybuild only")
    parser.add_argument("--reps", type=int, default=5, help="measured runs (after a warm-up)")
    parser.add_argument("--only", action="append", choices=ALL, help="run only this workload")
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="where results go")
    parser.add_argument("--work", default=None, help="parent of the temporary work folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--export-peers", action="store_true",
                        help="also time buildah pushing the export image to an oci-archive")
    parser.add_argument("--install", choices=("venv", "here"), default=None,
                        help="venv (the default, not with --smoke): install pybuild from --source "
                             "into a new virtual environment and run it there; here: run the "
                             "pybuild this interpreter imports")
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the pybuild source tree to install (default: this repository)")
    parser.add_argument("--python", default=None,
                        help="run pybuild with this interpreter (it must import builder)")
    parser.add_argument("--venv-python", default=None,
                        help="make the virtual environment with this interpreter (default: the "
                             f"distribution's {SYSTEM_PYTHON} if it is 3.11 or newer and has venv "
                             "and ensurepip, else the bench's own)")
    args = parser.parse_args(argv)
    if args.install is None:
        args.install = "here" if args.smoke else "venv"
    started = datetime.datetime.now(datetime.UTC)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` too stops the daemons we started
    install_missing(args.smoke)
    bench = Bench(args)
    try:
        bench.setup()
        bench.run(args.only or ALL, args.out, started)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; the rows so far are in --out", file=sys.stderr)
        return 130
    finally:
        bench.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
