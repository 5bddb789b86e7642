"""The seam between the solver and the kernel: running a step on an overlay.

``StepRunner`` turns what the solver decided (argv, env, user, mounts) into executor
calls: it mounts overlays for COPY and WORKDIR, runs RUN steps through
``builder.executor.run_step``, and prepares ``RUN --mount`` sources (cache folders in the
store, binds of the context or of another stage, secrets, tmpfs). Unit tests swap in a
runner whose ``run`` is the scripted executor.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import posixpath
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import instructions as ins
from .cachemount import cache_name, folder, prune
from .cachemount import locked as cachemount_locked
from .errors import BuildError, ExecError
from .fsutil import make_temp_dir, secure_join
from .parse_go import GO_FALSE, GO_TRUE, ram_in_bytes

if TYPE_CHECKING:
    from .config import ImageState
    from .dispatch import StageEnv
    from .solve import Solver

__all__ = ["MountDef", "StepRunner", "parse_mount_flag"]


@dataclass(frozen=True)
class MountDef:
    """One `RUN --mount`, parsed and expanded; ``key_json`` is what goes into the cache key."""

    type: str
    target: str
    options: dict[str, str] = field(default_factory=dict)
    readonly: bool = True
    content_key: str | None = None  # bind: checksum of the source files
    source_dir: Path | None = None  # bind of the context: the folder to bind
    source_tree: Any = None  # bind/cache from=: a context manager giving its DirTree
    cache: str | None = None  # cache: the name its folder is kept under (builder.cachemount)

    def key_json(self) -> dict[str, Any]:
        opts = {k: v for k, v in self.options.items() if k not in ("env",)}
        if self.type == "secret":
            # Secret values never reach a key: only where it is mounted and how.
            opts = {k: v for k, v in opts.items() if k in ("id", "target", "dst", "required", "mode",
                                                          "uid", "gid", "env")}
        return {"type": self.type, "target": self.target, "options": dict(sorted(opts.items())),
                "content": self.content_key}


_MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_MOUNT_KEYS = {"type": "type", "from": "from", "source": "source", "src": "source",
               "target": "target", "dst": "target", "destination": "target", "readonly": "ro",
               "ro": "ro", "readwrite": "rw", "rw": "rw", "id": "id", "sharing": "sharing",
               "required": "required", "size": "size", "mode": "mode", "uid": "uid", "gid": "gid",
               "env": "env"}


def parse_mount_flag(spec: str, expand: Callable[[str], str] = str) -> dict[str, str]:
    """A `RUN --mount` value -> canonical options, checked as BuildKit checks them (after
    ``expand`` of each value): `type=cache,dst=/x,readonly` -> {"type": "cache",
    "target": "/x", "ro": "true"}. Flags without a value are ro/rw and, for secret and
    ssh mounts, required; a bad key, value or type is a BuildError with BuildKit's text."""
    from .parse_args import LineError
    from .parse_typed import csv_fields

    out: dict[str, str] = {"type": "bind"}
    try:
        fields = csv_fields(spec, "mounts")
    except LineError as exc:
        raise BuildError(str(exc)) from None
    for field_ in fields:
        key, sep, value = field_.partition("=")
        key = key.lower()
        kind = out["type"]
        if not sep:
            if key in ("readonly", "ro", "readwrite", "rw"):
                out["ro"] = "true" if key in ("readonly", "ro") else "false"
            elif key == "required" and kind in ("secret", "ssh"):
                out["required"] = "true"
            elif key == "required":
                raise BuildError(f"unexpected key '{key}' for mount type '{kind}'")
            else:
                raise BuildError(f"invalid field '{field_}' must be a key=value pair")
            continue
        if key == "from" and "$" in value[:-1]:
            raise BuildError(f"'{key}' doesn't support variable expansion, define alias stage instead")
        value = expand(value)
        name = _MOUNT_KEYS.get(key)
        if name is None:
            raise BuildError(f"unexpected key '{key}' in '{field_}'")
        if name == "type":
            value = value.lower()
            if value not in _MOUNT_TYPES:
                raise BuildError(f"unsupported mount type {value!r}",
                                 hint="use " + ", ".join(_MOUNT_TYPES[:-1]) + " or ssh")
        elif name in ("ro", "rw", "required"):
            if value not in GO_TRUE | GO_FALSE:
                raise BuildError(f"invalid value for {key}: {value}")
            if name == "required" and kind not in ("secret", "ssh"):
                raise BuildError(f"unexpected key '{key}' for mount type '{kind}'")
            flag = value in GO_TRUE
            name, value = ("ro", str(not flag).lower()) if name == "rw" else (name, str(flag).lower())
        elif name == "size":
            if kind != "tmpfs":
                raise BuildError(f"unexpected key '{key}' for mount type '{kind}'")
            if ram_in_bytes(value) is None:
                raise BuildError(f"invalid value for {key}: {value}")
        elif name == "sharing":
            value = value.lower()
            if value not in ("shared", "private", "locked"):
                raise BuildError(f"unsupported sharing value {value!r}",
                                 hint="use shared, private or locked")
        elif name in ("mode", "uid", "gid"):
            try:
                ok = value.isdigit() and int(value, 8 if name == "mode" else 10) < 1 << 32
            except ValueError:  # 8 or 9 in a mode
                ok = False
            if not ok:
                raise BuildError(f"invalid value {value} for {name}")
        out[name] = value
    kind = out["type"]
    for key in ("mode", "uid", "gid"):
        if key in out and kind not in ("secret", "ssh", "cache"):
            raise BuildError(f"{key} not allowed for {kind!r} type mounts")
    if kind == "secret":  # in BuildKit's order (commands_runmount.go parseMount)
        if "from" in out:
            raise BuildError("secret mount should not have a from")
        if "sharing" in out:
            raise BuildError("secret mount should not define sharing")
        if not any(k in out for k in ("source", "target", "id")):
            raise BuildError("invalid secret mount. one of source, target required")
        if "source" in out and "id" in out:
            raise BuildError("both source and id can't be set")
    if "sharing" in out and kind != "cache":
        raise BuildError(f"invalid cache sharing set for {kind} mount")
    return out


class StepRunner:
    """Runs steps on real overlays with the executor (root, or a user namespace)."""

    def __init__(self, store_root: Path, *, secrets: dict[str, tuple[str, str]] | None = None,
                 ssh: dict[str, str] | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
        self.store_root = store_root
        self.secrets = secrets or {}
        self.ssh = ssh or {}  # id -> the agent socket to forward
        self.warn = warn
        self._copies: bool | None = None
        self._kept: tuple[tuple[Any, ...], Path, Any] | None = None
        self._kept_lock = threading.Lock()
        self._decide_lock = threading.Lock()
        self._pruned: set[tuple[str, bool]] = set()  # caches emptied by this build (--no-cache)
        self._pruned_lock = threading.Lock()

    def copies(self) -> bool:
        """Whether steps run on copies of their root filesystem instead of overlays (the
        copy-based snapshotter, ``layers.copydiff``): ``PYBUILD_SNAPSHOTTER=copy``, or
        ``auto`` (the default) where an overlay cannot be mounted in the store. Decided
        once, on first use."""
        with self._decide_lock:  # stages on threads: one probe, one warning
            if self._copies is None:
                self._copies = _use_copies(self.store_root / "tmp", self.warn)
        return self._copies

    # -- overlays for the builder's own file operations --------------------------------
    @contextlib.contextmanager
    def merged(self, lowers: Sequence[Path], upper: Path | None) -> Iterator[Path]:
        """The merged view of ``lowers`` (top first) with ``upper`` collecting changes;
        ``upper=None`` gives a read-only view."""
        from .executor import RootFS, mounted_rootfs

        if self.copies():
            with self._copy_for_step(lowers, reuse=upper is not None) as (copied, done):
                yield copied.path
                if upper is not None:
                    done(upper, ())
            return
        with contextlib.ExitStack() as stack:
            scratch = Path(make_temp_dir(self.store_root / "tmp", "ovl-"))
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

    # -- the copy-based snapshotter: one copy carried from step to step -----------------
    @contextlib.contextmanager
    def _copy_for_step(self, lowers: Sequence[Path], *, reuse: bool,
                       ) -> Iterator[tuple[Any, Callable[[Path, Sequence[str]], None]]]:
        """A ``CopiedRoot`` of ``lowers`` for one step, and ``done(upper, touched)`` to call
        when the step succeeded: its changes go into ``upper`` and the copy is kept for the
        next step. Otherwise the copy is removed on leaving."""
        copied, holder = self._copy_of(lowers, reuse=reuse)
        kept = False

        def done(upper: Path, touched: Sequence[str]) -> None:
            nonlocal kept
            copied.diff_into(upper, touched)
            self._keep(copied, holder, lowers, upper)
            kept = True

        try:
            yield copied, done
        finally:
            if not kept:
                _rmtree(holder)

    def _copy_of(self, lowers: Sequence[Path], *, reuse: bool) -> tuple[Any, Path]:
        """A copy of ``lowers`` (top first) and the folder holding it: the one the last
        step of this build left, when ``lowers`` are exactly what it holds (a step on top
        of the previous one, as most are), else a new one."""
        from .layers.copydiff import CopiedRoot, folder_identity

        kept = None
        if reuse:
            with self._kept_lock:
                kept, self._kept = self._kept, None
        if kept is not None:
            identity, holder, copied = kept
            if identity == tuple(folder_identity(p) for p in lowers):
                copied.rebase()
                return copied, holder
            _rmtree(holder)
        holder = Path(make_temp_dir(self.store_root / "tmp", "copy-"))
        try:
            return CopiedRoot(lowers, holder / "root"), holder
        except BaseException:
            _rmtree(holder)
            raise

    def _keep(self, copied: Any, holder: Path, lowers: Sequence[Path], upper: Path) -> None:
        """Keep the copy a step changed for the next step: it now is the copy of ``upper``
        (which the solver stores as the step's snapshot, renamed, so the same folder) on
        ``lowers``, or of ``lowers`` alone when the step changed nothing."""
        from .layers.copydiff import folder_identity

        with os.scandir(upper) as entries:
            tops = [upper] if any(entries) else []
        identity = tuple(folder_identity(p) for p in (*tops, *lowers))
        with self._kept_lock:
            stale, self._kept = self._kept, (identity, holder, copied)
        if stale is not None:
            _rmtree(stale[1])

    def close(self) -> None:
        """Remove the copy kept for a next step (the copy-based snapshotter)."""
        with self._kept_lock:
            kept, self._kept = self._kept, None
        if kept is not None:
            _rmtree(kept[1])

    def copy_up_to(self, lowers: Sequence[Path], upper: Path, rel: str,
                   names: Sequence[str] | None = None) -> bool:
        """When the step can write into ``upper`` directly, without an overlay mount,
        make the folders it writes in there as overlay's copy-up would (owner, mode, xattrs
        and times of the merged view) and return True. That is when nothing below can be
        met on the way: ``rel`` is missing from the merged view of ``lowers`` and every
        folder above it that exists is a real directory; or, given ``names``, ``rel`` is a
        real directory there and the step only makes those names in it, none of which is
        below. False (nothing made) otherwise. (Creating files through an overlay costs
        about twice as much, and mounting one more than a small step's work.)"""
        from .layers.diff import merged_lookup, read_xattrs

        if not rel:
            return False
        depth = len(rel.split("/"))
        shown = merged_lookup(list(lowers), rel)
        if shown is None:
            return False
        if len(shown) == depth:
            if not names or not stat.S_ISDIR(shown[-1][1].st_mode):
                return False
            for name in names:
                if name in ("", ".", "..") or "/" in name:
                    return False
                inside = merged_lookup(list(lowers), f"{rel}/{name}")
                if inside is None or len(inside) > depth:
                    return False
        try:
            for path, st, where in shown:
                made = upper / path
                made.mkdir(mode=0o700)
                os.chown(made, st.st_uid, st.st_gid)
                os.chmod(made, stat.S_IMODE(st.st_mode))
                for name, value in read_xattrs(where).items():
                    os.setxattr(made, name, value)
            # Overlay's copy-up keeps a folder's times (and puts back its parent's): only
            # the folder the step then writes in gets a new mtime, from that write.
            for path, st, _ in shown:
                os.utime(upper / path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        except OSError:
            # An owner or xattr this process may not give (a user namespace): overlay's
            # own copy-up decides instead.
            if shown:
                _rmtree(upper / shown[0][0])
            return False
        return True

    def mkdir(self, lowers: Sequence[Path], upper: Path, path: str, *, user: str) -> None:
        """WORKDIR's missing folders, owned by USER as BuildKit's mkdir reads it: like
        --chown (llb.WithUser), so an unknown name is 0 and a bare uid is also the gid."""
        from .copystep import resolve_chown
        from .layers.diff import merged_lookup

        with contextlib.ExitStack() as stack:
            rel = path.strip("/")
            shown = merged_lookup(list(lowers), rel) if rel else None
            if shown and len(shown) == len(rel.split("/")) and stat.S_ISDIR(shown[-1][1].st_mode):
                return  # every folder is there below, real ones: nothing to make or mount
            if self.copy_up_to(lowers, upper, rel):
                # Nothing below is in the way: the missing folders go straight into the
                # upper dir; the merged view is mounted only to look a user name up.
                root = upper
                owner_root = stack.enter_context(self.merged(lowers, None)) if user else None
            else:
                root = owner_root = stack.enter_context(self.merged(lowers, upper))
            uid, gid = resolve_chown(owner_root, user) if user else (0, 0)
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
        """`RUN --mount` values -> MountDefs, with BuildKit's defaults and checks."""
        out = []
        ssh_index = 0
        for raw in node.mounts:
            opts = parse_mount_flag(raw, lambda v: env.expand(v, image, node))
            kind = opts.pop("type")
            target = opts.pop("target", "")
            if kind == "secret":
                sid = opts.pop("source", "") or opts.get("id", "") or os.path.basename(target)
                if not sid:  # an empty value given
                    raise BuildError("one of source, target required")
                opts["id"] = sid
                if not target and "env" not in opts:
                    target = "/run/secrets/" + os.path.basename(sid)
            if kind == "ssh":
                if "source" in opts:
                    raise BuildError("ssh does not support source")
                opts.setdefault("id", "default")
                if not target:
                    target = f"/run/buildkit/ssh_agent.{ssh_index}"
                ssh_index += 1
            if kind == "cache":
                # BuildKit's default id is the target as written, cleaned: a relative target
                # names the same cache under every WORKDIR (no target: the id ".").
                opts.setdefault("id", posixpath.normpath(target))
            if target or not (kind == "secret" and "env" in opts):
                # A relative target, or none, is under the WORKDIR (`--mount=type=bind`
                # alone mounts the context on it), as BuildKit's dispatchRunMounts joins it.
                target = os.path.normpath(os.path.join("/", image.workdir or "/", target))
                if target == "/":
                    raise BuildError(f'invalid mount target "{target}"')
            readonly = opts["ro"] == "true" if "ro" in opts else kind not in ("cache", "tmpfs")
            tree = None
            content = None
            source_dir = None
            if kind in ("bind", "cache") and "from" in opts:
                # A stage, a named context or an image, as COPY --from finds them.
                from .copystep import source_tree

                label, tree, content = source_tree(solver, node, opts["from"], image)
                if label == "folder":
                    with tree() as folder_tree:
                        matches = folder_tree.select(opts.get("source", "") or ".")
                        content = f"{content} {folder_tree.checksum(matches)}"
            elif kind == "bind":
                source_dir = solver.context.root
                src = opts.get("source", "")
                try:
                    matches = solver.context.select(src or ".")
                except BuildError as exc:
                    # The context's own message is worded for COPY.
                    why = exc.message.removeprefix("COPY failed: ")
                    raise BuildError(f"--mount source {src or '.'!r}: {why}") from None
                content = str(solver.context.checksum(matches))
            cache = None
            if kind == "cache":
                cache = cache_name(opts["id"], _cache_base(opts, content))
            out.append(MountDef(kind, target, opts, readonly=readonly, content_key=content,
                                source_dir=source_dir, source_tree=tree, cache=cache))
        return out

    def prune_caches(self, mounts: Sequence[MountDef]) -> None:
        """A step that ignores the cache first empties the caches it mounts, once a build
        (as BuildKit prunes them when it loads such steps; see builder.cachemount)."""
        for m in mounts:
            if m.cache is None:
                continue
            which = (m.options["id"], m.cache != m.options["id"])
            with self._pruned_lock:
                if which in self._pruned:
                    continue
                self._pruned.add(which)
                prune(self.store_root, which[0], based=which[1], remove=_rmtree)

    def run(self, lowers: Sequence[Path], upper: Path, *, argv: Sequence[str], env: Sequence[str],
            cwd: str, user: str, network: str, mounts: Sequence[MountDef],
            output: Callable[[bytes], None], script: Any = None, memory: int | None = None,
            cpus: float | None = None, solver: Solver | None = None, insecure: bool = False,
            extra_hosts: tuple[tuple[str, str], ...] = (), shm_size: int | None = None,
            ulimits: tuple[tuple[str, int, int], ...] = ()) -> int:
        from .executor import DirRoot, Mount, RootFS, RunSpec, run_step

        env = list(env)
        with contextlib.ExitStack() as stack:
            scratch = Path(make_temp_dir(self.store_root / "tmp", "run-"))
            stack.callback(_rmtree, scratch)
            work = scratch / "work"
            work.mkdir()
            emounts: list[Mount] = []
            if script is not None:
                pipes = scratch / "pipes"
                pipes.mkdir()
                path = pipes / script.name
                path.write_text(script.data)
                path.chmod(0o755)
                emounts.append(Mount("bind", "/dev/pipes", source=pipes, readonly=True))
            ssh_targets = []
            for m in mounts:
                made = self._prepare_mount(m, scratch, stack, env, solver)
                emounts.extend(made)
                if m.type == "ssh" and made:
                    ssh_targets.append(m.target)
            if ssh_targets and not any(e.startswith("SSH_AUTH_SOCK=") for e in env):
                env.append(f"SSH_AUTH_SOCK={ssh_targets[0]}")  # as BuildKit: the first one
            if any("\0" in word for word in (*argv, *env, cwd)):
                # execve takes C strings: a NUL would cut the word short (BuildKit's runc
                # fails to start the process; exit code 1)
                raise ExecError("the command, its environment or its folder contains a NUL "
                                "byte, which no process can be given")
            empty = scratch / "empty"
            empty.mkdir()
            spec = RunSpec(argv=tuple(argv), env=tuple(env), cwd=cwd, user=user,
                           network=network,  # type: ignore[arg-type]
                           mounts=tuple(emounts), memory=memory, cpus=cpus, insecure=insecure,
                           extra_hosts=tuple(extra_hosts), shm_size=shm_size,
                           ulimits=tuple(ulimits))
            if self.copies():
                with self._copy_for_step(lowers, reuse=True) as (copied, done):
                    root = DirRoot(copied.path)
                    code = run_step(spec, root, output=output)
                    if code == 0:  # a failed step's changes are thrown away anyway
                        done(upper, root.touched)
                return code
            return run_step(spec, RootFS(list(lowers) or [empty], upper, work), output=output)

    def _prepare_mount(self, m: MountDef, scratch: Path, stack: contextlib.ExitStack,
                       env: list[str], solver: Solver | None) -> list[Any]:
        from .executor import Mount

        if m.type == "tmpfs":
            opts = []
            if "size" in m.options:
                opts.append(f"size={ram_in_bytes(m.options['size'])}")
            return [Mount("tmpfs", m.target, options=tuple(opts), readonly=m.readonly)]
        if m.type == "cache":
            return [self._cache_mount(m, scratch, stack)]
        if m.type == "bind":
            if m.source_tree is not None:
                root = stack.enter_context(m.source_tree()).root
            else:
                assert m.source_dir is not None and solver is not None
                root = m.source_dir
                if getattr(solver.context, "ignore", None) is not None:
                    # Only what .dockerignore lets through, as BuildKit sends the context.
                    root = _visible_copy(solver.context, scratch / _fresh(scratch, "ctx"))

            src = secure_join(root, m.options.get("source", "/"))
            if not src.exists():
                raise BuildError(f"--mount source {m.options.get('source', '/')!r} not found")
            if not m.readonly:
                # rw binds see their writes, which are thrown away after the step.
                import shutil

                copy = scratch / _fresh(scratch, "bind")
                if src.is_dir():
                    shutil.copytree(src, copy, symlinks=True)
                else:
                    shutil.copy2(src, copy)
                src = copy
            return [Mount("bind", m.target, source=src, readonly=m.readonly)]
        if m.type == "secret":
            return self._secret_mount(m, scratch, stack, env)
        if m.type == "ssh":
            return self._ssh_mount(m, stack)
        raise ExecError(f"RUN --mount=type={m.type} is not supported")

    def _cache_mount(self, m: MountDef, scratch: Path, stack: contextlib.ExitStack) -> Any:
        """A folder in the store kept between builds (builder.cachemount names it), made on
        first use: empty with mode/uid/gid, or seeded from the ``from`` stage."""
        from .executor import Mount

        assert m.cache is not None
        base = folder(self.store_root, m.cache)
        sharing = m.options.get("sharing", "shared").lower()
        fd = stack.enter_context(cachemount_locked(base))
        if not base.exists():
            # Made aside and renamed: a half-seeded cache is never seen.
            part = Path(make_temp_dir(self.store_root / "tmp", "cache-"))
            try:
                source = posixpath.join("/", m.options.get("source", ""))
                if m.source_tree is not None and not (source == "/" and _sets_owner(m.options)):
                    with m.source_tree() as tree:
                        src = secure_join(tree.root, source)
                        if not src.is_dir():
                            raise BuildError(f"--mount from={m.options['from']}: {source} is "
                                             "not a folder there")
                        os.rmdir(part)
                        _copy_tree(src, part)
                else:
                    os.chmod(part, int(m.options.get("mode", "755"), 8))
                    _chown(part, m.options)
                os.rename(part, base)
            except BaseException:
                _rmtree(part)
                raise
        if sharing != "locked":
            fcntl.flock(fd, fcntl.LOCK_UN)  # only creation is serialised
        if sharing == "private":
            # A private instance for this step: others' writes are not seen, its own kept
            # nowhere (BuildKit keeps a second instance; pybuild keeps one per id).
            priv = scratch / _fresh(scratch, "cache")
            _copy_tree(base, priv)
            base = priv
        if m.source_tree is None and m.options.get("source", "").strip("/"):
            # Without from=, source= names a folder inside the cache.
            base = secure_join(base, m.options["source"])
            if not base.is_dir():
                raise BuildError(f"--mount source {m.options['source']!r}: no such folder in "
                                 f"cache {m.options['id']!r}")
        return Mount("cache", m.target, source=base, readonly=m.readonly)

    def _secret_mount(self, m: MountDef, scratch: Path, stack: contextlib.ExitStack,
                      env: list[str]) -> list[Any]:
        from .executor import Mount

        sid = m.options["id"]
        if sid not in self.secrets:
            if m.options.get("required") == "true":
                raise BuildError(f"secret {sid}: not found", hint=f"pass it with --secret id="
                                 f"{sid},src=FILE or --secret id={sid},env=VAR")
            return []
        kind, value = self.secrets[sid]
        try:
            data = Path(value).read_bytes() if kind == "file" else os.environ[value].encode()
        except (OSError, KeyError):
            raise BuildError(f"secret {sid}: cannot read its source "
                             f"{'file ' + value if kind == 'file' else 'variable ' + value}") from None
        if "env" in m.options:
            env.append(f"{m.options['env']}={data.decode('utf-8', 'replace')}")
            if not m.target:
                return []
        # On a tmpfs of its own where we may mount one: the value never touches the disk.
        holder_dir = scratch / _fresh(scratch, "secret")
        holder_dir.mkdir(mode=0o700)
        from .executor import libc

        try:
            libc.mount("tmpfs", holder_dir, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV,
                       "mode=0700,size=1m")
        except OSError:
            pass  # rootless: a plain file in the step's scratch folder, removed with it
        else:
            stack.callback(libc.umount, holder_dir, libc.MNT_DETACH)
        holder = holder_dir / "secret"
        holder.write_bytes(data)
        os.chmod(holder, int(m.options.get("mode", "400"), 8))
        _chown(holder, m.options)
        return [Mount("secret", m.target, source=holder, readonly=True)]

    def _ssh_mount(self, m: MountDef, stack: contextlib.ExitStack) -> list[Any]:
        from .executor import Mount

        sid = m.options["id"]
        socket_path = self.ssh.get(sid)
        if socket_path is None:
            if m.options.get("required") == "true":
                raise BuildError(f"no SSH key {sid!r} forwarded from the client",
                                 hint=f"pass --ssh {sid}" + ("" if sid == "default" else "=SOCKET"))
            return []
        proxy = stack.enter_context(_SSHProxy(socket_path, mode=int(m.options.get("mode", "600"), 8),
                                              options=m.options))
        return [Mount("ssh", m.target, source=proxy)]


_SNAPSHOTTERS = ("auto", "overlay", "copy")


def _use_copies(scratch: Path, warn: Callable[[str], None] | None) -> bool:
    choice = os.environ.get("PYBUILD_SNAPSHOTTER", "").strip().lower() or "auto"
    if choice not in _SNAPSHOTTERS:
        from .errors import UsageError

        raise UsageError(f"PYBUILD_SNAPSHOTTER={choice!r} is not a snapshotter",
                         hint="use auto (the default), overlay or copy")
    if choice != "auto":
        return choice == "copy"
    if os.geteuid() != 0:
        # Each step mounts its overlay in a user namespace of its own: nothing to probe here.
        return False
    from .executor.rootfs import overlay_problem

    problem = overlay_problem(scratch)
    if problem is None:
        return False
    if warn is not None:
        warn(f"overlayfs cannot be mounted for the store in {scratch.parent} ({problem}): "
             "steps run on copies of their root filesystem instead, which is slower "
             "(PYBUILD_SNAPSHOTTER=copy chooses this without trying overlay)")
    return True


def _sets_owner(options: dict[str, str]) -> bool:
    return any(k in options for k in ("uid", "gid", "mode"))


def _cache_base(options: dict[str, str], stage_digest: str | None) -> str | None:
    """What a cache mount starts from, in BuildKit's terms (convert_runmount.go): the
    ``from`` stage (at ``source``), a folder made with uid/gid/mode (only where no source
    is given), or nothing."""
    source = posixpath.join("/", options.get("source", ""))
    made = (f"mkdir {int(options.get('mode', '755'), 8):o} {options.get('uid', '0')} "
            f"{options.get('gid', '0')}" if source == "/" and _sets_owner(options) else "")
    if stage_digest is not None:
        return f"stage {stage_digest} {source} {made}".rstrip()
    return made or None


def _copy_tree(src: Path, dest: Path) -> None:
    """``src`` copied to ``dest`` (absent), with modes, times and owners."""
    import shutil

    shutil.copytree(src, dest, symlinks=True)
    if os.geteuid() != 0:
        return
    for dirpath, dirnames, filenames in os.walk(src):
        for name in ("", *dirnames, *filenames):
            st = os.lstat(os.path.join(dirpath, name))
            os.lchown(os.path.join(dest, os.path.relpath(os.path.join(dirpath, name), src)),
                      st.st_uid, st.st_gid)


def _chown(path: Path, options: dict[str, str]) -> None:
    """uid=/gid= of a mount; unprivileged without a namespace of our own, the building user
    already is root in the step; in one, an id it does not map is named in the error."""
    if os.geteuid() == 0:
        from .executor.userns import chown

        chown(path, int(options.get("uid", "0")), int(options.get("gid", "0")),
              f"the mount's uid={options.get('uid', '0')},gid={options.get('gid', '0')}")


def _fresh(scratch: Path, prefix: str) -> str:
    return f"{prefix}-{len(list(scratch.iterdir()))}"


def _visible_copy(context: Any, dest: Path) -> Path:
    """The context as .dockerignore shows it: hard links (copies across filesystems)."""
    from .context import SourceMatch

    dest.mkdir()
    for entry in context.walk(SourceMatch("", "", True)):
        if entry.rel == "":
            continue
        target = dest / entry.rel
        mode = entry.st.st_mode
        if stat.S_ISDIR(mode):
            target.mkdir()
            os.chmod(target, stat.S_IMODE(mode))
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(entry.path), target)
        else:
            try:
                os.link(entry.path, target)
            except OSError:
                import shutil

                shutil.copy2(entry.path, target)
    return dest


class _SSHProxy:
    """A unix socket made for one step that forwards each connection to the agent's
    socket: the step gets the owner and mode the Dockerfile asks for (uid/gid/mode, 0600
    by default) without touching the agent's socket, as BuildKit's sshforward does."""

    def __init__(self, agent: str, *, mode: int, options: dict[str, str]) -> None:
        self.agent, self.mode, self.options = agent, mode, options

    def __enter__(self) -> Path:
        import socket
        import tempfile
        import threading

        # AF_UNIX paths are short (108 bytes): a folder in /tmp, not in the store.
        self.dir = Path(tempfile.mkdtemp(prefix="pbssh-"))
        self.path = self.dir / "agent.sock"
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(self.path))
        os.chmod(self.path, self.mode)
        _chown(self.path, self.options)
        self.server.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        return self.path

    def _serve(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.agent)
            except OSError:
                client.close()
                upstream.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def __exit__(self, *exc: object) -> None:
        import socket

        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        self.thread.join(timeout=5)
        _rmtree(self.dir)


def _pump(src: Any, dst: Any) -> None:
    import socket

    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _rmtree(path: Path) -> None:
    from .cache.store import remove_tree

    if os.geteuid() != 0:
        _make_removable(path)
    remove_tree(path)


def _make_removable(path: Path) -> None:
    """Unprivileged, overlayfs leaves its work/work dir mode 000 (and a step may make such
    dirs): give the owner (us) access again, top down, so the tree can be removed. (Root of
    our own user namespace, CAP_DAC_OVERRIDE covers every id it maps: nothing to do.)"""
    for dirpath, dirnames, _files in os.walk(path):
        for name in dirnames:
            child = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                st = os.lstat(child)
                if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o700 != 0o700:
                    os.chmod(child, stat.S_IMODE(st.st_mode) | 0o700)
