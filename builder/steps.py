"""The seam between the solver and the kernel: running a step on an overlay.

``StepRunner`` turns what the solver decided (argv, env, user, mounts) into executor
calls: it mounts overlays for COPY and WORKDIR, runs RUN steps through
``builder.executor.run_step``, and prepares ``RUN --mount`` sources (cache folders in the
store, binds of the context or of another stage, secrets, tmpfs). Unit tests swap in a
runner whose ``run`` is the scripted executor.
"""
from __future__ import annotations

import contextlib
import csv
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import instructions as ins
from .digest import sha256_bytes
from .errors import BuildError, ExecError

if TYPE_CHECKING:
    from .config import ImageState
    from .dispatch import StageEnv
    from .solve import Solver

__all__ = ["MountDef", "StepRunner", "parse_mount_flag"]

_SIZE = re.compile(r"^(\d+)([kmgKMG]?)[bB]?$")


@dataclass(frozen=True)
class MountDef:
    """One `RUN --mount`, parsed and expanded; ``key_json`` is what goes into the cache key."""

    type: str
    target: str
    options: dict[str, str] = field(default_factory=dict)
    readonly: bool = True
    content_key: str | None = None  # bind: checksum of the source files
    source_dir: Path | None = None  # bind of the context: the folder to bind
    source_stage: Any = None  # bind/cache from a stage: its StageResult

    def key_json(self) -> dict[str, Any]:
        opts = {k: v for k, v in self.options.items() if k not in ("env",)}
        if self.type == "secret":
            # Secret values never reach a key: only where it is mounted and how.
            opts = {k: v for k, v in opts.items() if k in ("id", "target", "dst", "required", "mode",
                                                          "uid", "gid", "env")}
        return {"type": self.type, "target": self.target, "options": dict(sorted(opts.items())),
                "content": self.content_key}


def parse_mount_flag(spec: str) -> dict[str, str]:
    """`type=cache,target=/x,ro` -> {"type": "cache", "target": "/x", "ro": "true"}."""
    out: dict[str, str] = {}
    for field_ in next(csv.reader([spec]), []):
        key, sep, value = field_.partition("=")
        key = key.strip().lower()
        if not key:
            continue
        out[key] = value if sep else "true"
    aliases = {"dst": "target", "destination": "target", "src": "source", "readonly": "ro"}
    for alias, name in aliases.items():
        if alias in out and name not in out:
            out[name] = out.pop(alias)
    out.setdefault("type", "bind")
    return out


def _truthy(value: str | None) -> bool:
    return (value or "true").lower() in ("true", "1", "yes", "")


class StepRunner:
    """Runs steps on real overlays with the executor (root, or a user namespace)."""

    def __init__(self, store_root: Path, *, secrets: dict[str, tuple[str, str]] | None = None) -> None:
        self.store_root = store_root
        self.secrets = secrets or {}

    # -- overlays for the builder's own file operations --------------------------------
    @contextlib.contextmanager
    def merged(self, lowers: Sequence[Path], upper: Path | None) -> Iterator[Path]:
        """The merged view of ``lowers`` (top first) with ``upper`` collecting changes;
        ``upper=None`` gives a read-only view."""
        from .executor import RootFS, mounted_rootfs

        with contextlib.ExitStack() as stack:
            scratch = Path(tempfile.mkdtemp(prefix="ovl-", dir=self.store_root / "tmp"))
            stack.callback(_rmtree, scratch)
            empty = scratch / "empty"
            empty.mkdir()
            if upper is None:
                # A read-only overlay needs two lowers at least: an empty one at the bottom.
                rootfs = RootFS([*lowers, empty], upper=None, work=None)  # type: ignore[arg-type]
            else:
                work = scratch / "work"
                work.mkdir()
                rootfs = RootFS([*lowers] or [empty], upper=upper, work=work)
            merged = stack.enter_context(mounted_rootfs(rootfs))
            yield Path(merged)

    def mkdir(self, lowers: Sequence[Path], upper: Path, path: str, *, user: str) -> None:
        from .executor import resolve_user
        from .fsutil import secure_join

        with self.merged(lowers, upper) as root:
            uid, gid = 0, 0
            if user:
                uid, gid, _ = resolve_user(root, user)
            target = secure_join(root, path)
            missing = []
            p = target
            while not p.exists() and not p.is_symlink() and p != root:
                missing.append(p)
                p = p.parent
            for d in reversed(missing):
                d.mkdir(mode=0o755)
                os.chmod(d, 0o755)
                os.chown(d, uid, gid)

    # -- RUN ---------------------------------------------------------------------------
    def parse_mounts(self, node: ins.Run, env: StageEnv, image: ImageState,
                     solver: Solver) -> list[MountDef]:
        out = []
        for raw in node.mounts:
            opts = parse_mount_flag(raw)
            opts = {k: env.expand(v, image, node) for k, v in opts.items()}
            kind = opts.pop("type")
            if kind not in ("bind", "cache", "tmpfs", "secret", "ssh"):
                raise BuildError(f"unsupported mount type {kind!r} in --mount={raw}",
                                 hint="use bind, cache, tmpfs, secret or ssh")
            target = opts.pop("target", "")
            if kind == "secret" and not target:
                if "env" not in opts:
                    target = "/run/secrets/" + opts.get("id", "")
            if kind == "ssh" and not target:
                target = "/run/buildkit/ssh_agent." + opts.get("id", "default")
            if not target and not (kind == "secret" and "env" in opts):
                raise BuildError(f"--mount={raw}: the mount needs a target")
            if target and not target.startswith("/"):
                target = os.path.normpath(os.path.join(image.workdir or "/", target))
            readonly = kind == "bind" and not _truthy(opts.get("rw", "false")) or \
                _truthy(opts.get("ro", "false")) and "ro" in opts
            stage = None
            content = None
            source_dir = None
            if kind in ("bind", "cache") and "from" in opts:
                stage = solver.stage_result(opts["from"])
                if stage is None and kind == "bind":
                    raise BuildError(f"--mount from={opts['from']}: no such stage (named contexts and "
                                     "images are not supported as mount sources yet)")
                if stage is not None:
                    content = str(stage.fs.key.digest)
            elif kind == "bind":
                source_dir = solver.context.root
                src = opts.get("source", ".")
                content = str(solver.context.checksum_path(src))
            out.append(MountDef(kind, target, opts, readonly=readonly, content_key=content,
                                source_dir=source_dir, source_stage=stage))
        return out

    def run(self, lowers: Sequence[Path], upper: Path, *, argv: Sequence[str], env: Sequence[str],
            cwd: str, user: str, network: str, mounts: Sequence[MountDef],
            output: Callable[[bytes], None], script: Any = None, memory: int | None = None,
            cpus: float | None = None, solver: Solver | None = None) -> int:
        from .executor import Mount, RootFS, RunSpec, run_step

        env = list(env)
        with contextlib.ExitStack() as stack:
            scratch = Path(tempfile.mkdtemp(prefix="run-", dir=self.store_root / "tmp"))
            stack.callback(_rmtree, scratch)
            work = scratch / "work"
            work.mkdir()
            emounts: list[Mount] = []
            if script is not None:
                pipes = scratch / "pipes"
                pipes.mkdir()
                path = pipes / script.name
                path.write_text(script.content)
                path.chmod(0o755)
                emounts.append(Mount("bind", "/dev/pipes", source=pipes, readonly=True))
            for m in mounts:
                emounts.extend(self._prepare_mount(m, scratch, stack, env, solver))
            empty = scratch / "empty"
            empty.mkdir()
            spec = RunSpec(argv=tuple(argv), env=tuple(env), cwd=cwd, user=user,
                           network=network,  # type: ignore[arg-type]
                           mounts=tuple(emounts), memory=memory, cpus=cpus)
            return run_step(spec, RootFS(list(lowers) or [empty], upper, work), output=output)

    def _prepare_mount(self, m: MountDef, scratch: Path, stack: contextlib.ExitStack,
                       env: list[str], solver: Solver | None) -> list[Any]:
        from .executor import Mount

        if m.type == "tmpfs":
            opts = []
            if "size" in m.options:
                opts.append(f"size={_parse_size(m.options['size'])}")
            return [Mount("tmpfs", m.target, options=tuple(opts))]
        if m.type == "cache":
            cid = m.options.get("id") or m.target
            base = self.store_root / "cache-mounts" / sha256_bytes(cid.encode()).hex[:32]
            base.mkdir(parents=True, exist_ok=True)
            mode = int(m.options.get("mode", "755"), 8)
            if not any(base.iterdir()):
                os.chmod(base, mode)
                os.chown(base, int(m.options.get("uid", "0")), int(m.options.get("gid", "0")))
            sharing = m.options.get("sharing", "shared")
            if sharing == "locked":
                import fcntl

                fd = os.open(str(base) + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(fd, fcntl.LOCK_EX)
                stack.callback(os.close, fd)
            elif sharing == "private":
                priv = scratch / f"cache-{len(list(scratch.iterdir()))}"
                import shutil

                shutil.copytree(base, priv, symlinks=True)
                base = priv
            return [Mount("cache", m.target, source=base, readonly=_truthy(m.options.get("ro", "false"))
                          and "ro" in m.options)]
        if m.type == "bind":
            if m.source_stage is not None:
                assert solver is not None
                lowers = solver.lowers_of(m.source_stage.fs)
                root = stack.enter_context(self.merged(lowers, None))
            else:
                assert m.source_dir is not None
                root = m.source_dir
            from .fsutil import secure_join

            src = secure_join(root, m.options.get("source", "/"))
            if not src.exists():
                raise BuildError(f"--mount source {m.options.get('source', '/')!r} not found")
            if not m.readonly:
                # rw binds see their writes, which are thrown away after the step.
                import shutil

                copy = scratch / f"bind-{len(list(scratch.iterdir()))}"
                if src.is_dir():
                    shutil.copytree(src, copy, symlinks=True)
                else:
                    shutil.copy2(src, copy)
                src = copy
            return [Mount("bind", m.target, source=src, readonly=m.readonly)]
        if m.type == "secret":
            sid = m.options.get("id") or os.path.basename(m.target)
            required = _truthy(m.options.get("required", "false")) and "required" in m.options
            if sid not in self.secrets:
                if required:
                    raise BuildError(f"secret {sid} not found", hint=f"pass it with --secret id="
                                     f"{sid},src=FILE or --secret id={sid},env=VAR")
                return []
            kind, value = self.secrets[sid]
            data = Path(value).read_bytes() if kind == "file" else os.environ.get(value, "").encode()
            if "env" in m.options:
                env.append(f"{m.options['env']}={data.decode('utf-8', 'replace')}")
                if not m.target:
                    return []
            holder = scratch / f"secret-{len(list(scratch.iterdir()))}"
            holder.write_bytes(data)
            os.chmod(holder, int(m.options.get("mode", "400"), 8))
            os.chown(holder, int(m.options.get("uid", "0")), int(m.options.get("gid", "0")))
            return [Mount("secret", m.target, source=holder, readonly=True)]
        raise ExecError(f"RUN --mount=type={m.type} is not supported yet")


def _parse_size(text: str) -> int:
    m = _SIZE.match(text.strip())
    if not m:
        raise BuildError(f"invalid tmpfs size {text!r}")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    return int(m.group(1)) * mult


def _rmtree(path: Path) -> None:
    from .cache.store import remove_tree

    remove_tree(path)
