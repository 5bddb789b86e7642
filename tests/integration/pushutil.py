"""Helpers for the push and image-store tests: an image imported into a fresh store (with one
layer large enough to go up in chunks), pybuild runs whose outputs are kept (to grep them for
secrets), and skopeo's view of a pushed image."""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.runbuild import pybuild


@dataclass
class Session:
    """pybuild with one store and environment; every output is kept in ``seen``."""

    store: Path
    env: dict[str, str]
    seen: list[str] = field(default_factory=list)

    def run(self, *args: str, check: bool = True, stdin: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **self.env, "PYBUILD_ROOT": str(self.store), **(env or {})}
        if stdin is None:
            proc = pybuild(*args, check=False, env=full_env, timeout=120)
        else:
            proc = subprocess.run(["pybuild", *args], input=stdin, capture_output=True, text=True,
                                  env=full_env, timeout=120, check=False)
        self.seen += [proc.stdout, proc.stderr]
        if check and proc.returncode != 0:
            raise AssertionError(f"pybuild {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc


def rootfs(folder: Path, big: int = 0) -> Path:
    """A tiny root filesystem; ``big`` bytes of incompressible data make its layer large."""
    (folder / "etc").mkdir(parents=True, exist_ok=True)
    (folder / "etc" / "hello").write_text("Hello, Containers!\n")
    if big:
        (folder / "data.bin").write_bytes(os.urandom(big))
    return folder


def imported(tmp_path: Path, name: str, *, big: int = 0, env: dict[str, str] | None = None) -> Session:
    session = Session(tmp_path / "store", dict(env or {}))
    session.run("import", str(rootfs(tmp_path / "rootfs", big)), name)
    return session


def skopeo_digest(ref: str, *extra: str) -> str:
    proc = subprocess.run(["skopeo", "inspect", *extra, f"docker://{ref}"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return str(json.loads(proc.stdout)["Digest"])


def stored_digest(session: Session, name: str) -> str:
    out = json.loads(session.run("inspect", name).stdout)
    return str(out[0]["Digest"])


def assert_one_sentence_error(proc: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    for part in parts:
        assert part in proc.stderr, (part, proc.stderr)


def docker_loads(request: "pytest.FixtureRequest", archive: Path, name: str, image_id: str) -> None:
    """docker load, which checks every layer against the config's diff_ids, takes ``archive``
    and names ``name`` the image ``image_id`` (where a private dockerd can run)."""
    import pytest

    try:
        daemon = request.getfixturevalue("dockerd")
    except pytest.skip.Exception:
        return
    loaded = daemon.docker("load", "-i", str(archive))
    assert loaded.returncode == 0, loaded.stderr
    assert name in loaded.stdout
    assert daemon.docker("image", "inspect", "-f", "{{.Id}}", name).stdout.strip() == image_id
