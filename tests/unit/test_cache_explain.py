"""builder.cache.explain: the reasons a step missed, from its key inputs and the last entry
at the same position."""
from __future__ import annotations

from builder.cache.explain import Observation, file_changes, reasons
from builder.cache.keys import base_key, step_key

BASE1 = base_key(manifest_digest="sha256:" + "1" * 64)
BASE2 = base_key(manifest_digest="sha256:" + "2" * 64)


def _run(env: list[str], argv: str = "echo hi", parent=BASE1, **extra: object) -> Observation:
    op = {"kind": "run", "argv": ["/bin/sh", "-c", argv], "env": sorted(env), "user": "",
          "cwd": "/", "network": "default", "security": "sandbox", "mounts": [], "script": None, **extra}
    key = step_key(parent, op)
    return Observation(str(key.digest), dict(key.inputs),
                       dict(parent.inputs) if "base" in parent.inputs else None,
                       base_name="127.0.0.1:5000/busybox:1")


def _copy(files: dict[str, str], parent=BASE1) -> Observation:
    op = {"kind": "copy", "sources": ["."], "dest": "/app", "content": [str(sorted(files.items()))],
          "from": None}
    key = step_key(parent, op)
    return Observation(str(key.digest), dict(key.inputs), dict(parent.inputs), files, "busybox")


def test_no_earlier_entry() -> None:
    assert reasons(None, _run(["A=1"])) == ["no earlier entry"]


def test_build_arg_and_env_changes() -> None:
    old, new = _run(["VERSION=1", "PATH=/bin"]), _run(["VERSION=2", "PATH=/bin", "X=y"])
    assert reasons(old, new, arg_names={"VERSION"}) == ["build arg VERSION: 1 -> 2", "env X added: y"]


def test_run_text_changed() -> None:
    assert reasons(_run([]), _run([], argv="echo bye")) == ["RUN text changed"]


def test_base_image_moved() -> None:
    assert reasons(_run([]), _run([], parent=BASE2)) == \
        [f"base image 127.0.0.1:5000/busybox:1 now sha256:{'2' * 64}"]


def test_earlier_step_changed() -> None:
    p1 = step_key(BASE1, {"kind": "mkdir", "path": "/a"})
    p2 = step_key(BASE1, {"kind": "mkdir", "path": "/b"})
    assert reasons(_run([], parent=p1), _run([], parent=p2)) == ["an earlier step changed"]


def test_copy_names_the_files() -> None:
    old = _copy({"app/main.py": "sha256:1", "app/util.py": "sha256:2", "gone.txt": "sha256:3"})
    new = _copy({"app/main.py": "sha256:9", "app/util.py": "sha256:2", "new.txt": "sha256:4"})
    assert reasons(old, new) == ["app/main.py changed", "gone.txt removed", "new.txt added"]
    many = {f"f{i}": "x" for i in range(9)}
    assert file_changes({}, many)[-1] == "4 more files changed"


def test_same_key_means_the_result_is_gone() -> None:
    obs = _run([])
    assert reasons(obs, obs) == ["its cached result is gone (pruned, or not finished)"]


def test_observation_round_trips_through_json() -> None:
    obs = _copy({"a": "sha256:1"})
    assert Observation.from_json(obs.to_json()) == obs
