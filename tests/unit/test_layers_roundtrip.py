"""Property: any snapshot -> layer -> unpacked snapshot -> layer gives the very same layer,
and applying it onto an empty tree gives the snapshot's entries."""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.layers.diff import changes
from builder.layers.tar import write_layer
from builder.layers.unpack import unpack_blob

NAMES = st.sampled_from(["a", "b", "a-b", "Z", "é", "long" * 30, "x.y", "0"])
NODE = st.recursive(
    st.one_of(
        st.tuples(st.just("file"), st.binary(max_size=300), st.sampled_from([0o644, 0o4755, 0o600])),
        st.tuples(st.just("sym"), NAMES, st.just(0)),
        st.tuples(st.just("whiteout"), st.just(b""), st.just(0)),
        st.tuples(st.just("fifo"), st.just(b""), st.just(0o640)),
    ),
    lambda children: st.tuples(st.just("dir"), st.dictionaries(NAMES, children, max_size=4),
                               st.sampled_from([0o755, 0o700, 0o2775, "opaque"])),
    max_leaves=12,
)


def _build(path: Path, node: tuple, mtime: int) -> None:
    kind, payload, mode = node
    if kind == "file":
        path.write_bytes(payload)
        os.chmod(path, mode)
    elif kind == "sym":
        os.symlink(payload, path)
    elif kind == "whiteout":
        try:
            os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
        except PermissionError:
            (path.parent / (".wh." + path.name)).touch()
            return
    elif kind == "fifo":
        os.mkfifo(path, mode)
    else:
        path.mkdir()
        for name, child in payload.items():
            _build(path / name, child, mtime + 1)
        if mode == "opaque":
            os.setxattr(path, "user.overlay.opaque", b"y")
        else:
            os.chmod(path, mode)
    os.utime(path, (mtime, mtime), follow_symlinks=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=st.dictionaries(NAMES, NODE, max_size=5), epoch=st.one_of(st.none(), st.just(50)))
def test_layer_snapshot_round_trip(tree: dict, epoch: int | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        src = t / "src"
        _build(src, ("dir", tree, 0o755), 10)
        first = write_layer(src, t / "1.tgz", source_date_epoch=epoch)
        unpack_blob(t / "1.tgz", t / "snap")
        second = write_layer(t / "snap", t / "2.tgz", source_date_epoch=epoch)
        assert first == second
        # Applying onto nothing leaves exactly the snapshot's entries (whiteouts vanish).
        unpack_blob(t / "1.tgz", t / "flat", mode="apply")
        want = sorted(c.path for c in changes(src) if c.kind == "entry")
        got = sorted(p.relative_to(t / "flat").as_posix() for p in (t / "flat").rglob("*"))
        assert got == want
        shutil.rmtree(t, ignore_errors=True)
