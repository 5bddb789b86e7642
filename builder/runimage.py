"""`pybuild run`: run an image's command on a throwaway overlay, as a RUN step is run.

A check of what was built, not a container manager: the process runs in the foreground
in the same isolation as RUN, its changes are thrown away, its exit status is returned.
"""
from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .cache.store import Store, remove_tree
from .errors import BuildError, UsageError

__all__ = ["run_image"]


def _image_layers(store: Store, name: str) -> tuple[dict, list]:
    from .base import load_stored_image
    from .images import ImageStore

    try:
        image = ImageStore(store).lookup(name)  # a name, or an image ID as docker run takes it
    except BuildError:
        raise UsageError(f"image {name!r} not found in the local store",
                         hint="build it with `pybuild build -t NAME .` or `pybuild pull NAME`") from None
    loaded = load_stored_image(store, image.manifest_digest)
    if loaded is None:
        raise BuildError(f"image {name!r} has blobs missing from the store",
                         hint="build or pull it again")
    return loaded


def _warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr)


def _check_platform(name: str, config: dict) -> None:
    """An image for another platform runs through the kernel's emulator, said as docker run
    says it; without an emulator it is refused before anything starts."""
    from .emulation import emulation_problem
    from .hostplatform import config_platform, format_platform, host_build_platform

    platform = config_platform(config)
    if platform is None:
        return
    host = format_platform(host_build_platform())
    if platform.split("/")[:2] == host.split("/")[:2]:
        return
    problem = emulation_problem(platform)
    if problem:
        raise BuildError(f"cannot run {name}, an image for {platform}: {problem}")
    _warn(f"The requested image's platform ({platform}) does not match the detected host "
          f"platform ({host}) and no specific platform was requested")


def run_image(store: Store, name: str, command: Sequence[str], *, env: Sequence[str] = (),
              network: str = "default", volumes: Sequence[str] = (), user: str | None = None,
              workdir: str | None = None, entrypoint: str | None = None) -> int:
    from .executor import Mount, RootFS, RunSpec, run_step
    from .layerstore import lower_dirs
    from .solve import LayerRef

    config, layers = _image_layers(store, name)
    _check_platform(name, config)
    cfg = config.get("config") or {}
    entry = [entrypoint] if entrypoint else list(cfg.get("Entrypoint") or [])
    argv = entry + (list(command) if command else ([] if entrypoint and not command else list(cfg.get("Cmd") or [])))
    if not argv:
        raise UsageError(f"image {name!r} has no command: give one after the image name")
    image_env = dict(e.split("=", 1) if "=" in e else (e, "") for e in cfg.get("Env") or [])
    for item in env:
        key, sep, value = item.partition("=")
        if not sep:
            value = os.environ.get(key, "")
        image_env[key] = value
    mounts = []
    for spec in volumes:
        host, sep, target = spec.partition(":")
        if not sep or not target.startswith("/"):
            raise UsageError(f"invalid volume {spec!r}: use HOST:CONTAINER with an absolute container path")
        readonly = target.endswith(":ro")
        target = target.removesuffix(":ro").removesuffix(":rw")
        if not Path(host).exists():
            raise UsageError(f"volume source {host} does not exist")
        mounts.append(Mount("bind", target, source=Path(host).resolve(), readonly=readonly))

    lowers = lower_dirs(store, [LayerRef(b.diff_id, b) for b in layers])
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=store.root / "tmp"))
    try:
        upper, work, empty = scratch / "upper", scratch / "work", scratch / "empty"
        for d in (upper, work, empty):
            d.mkdir()
        spec = RunSpec(argv=tuple(argv), env=tuple(f"{k}={v}" for k, v in image_env.items()),
                       cwd=workdir or cfg.get("WorkingDir") or "/", user=user if user is not None else cfg.get("User") or "",
                       hostname="pybuild", network=network, mounts=tuple(mounts))  # type: ignore[arg-type]
        out = sys.stdout.buffer

        def output(chunk: bytes) -> None:
            out.write(chunk)
            out.flush()

        from .steps import StepRunner

        if StepRunner(store.root, warn=_warn).copies():
            from .executor import DirRoot
            from .layers.copydiff import CopiedRoot

            return run_step(spec, DirRoot(CopiedRoot(lowers, scratch / "root").path),
                            output=output)
        return run_step(spec, RootFS(lowers or [empty], upper, work), output=output)
    finally:
        remove_tree(scratch)
