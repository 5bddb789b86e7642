"""``layers.diff.merged_lookup``: what an overlay of snapshots shows along a path, read
from the snapshot folders without mounting them (used by COPY to write a destination no
layer below has straight into the upper directory)."""
from __future__ import annotations

import os
from pathlib import Path

from builder.layers.diff import merged_lookup


def _layer(root: Path, dirs: tuple[str, ...] = (), files: tuple[str, ...] = (),
           whiteouts: tuple[str, ...] = (), opaque: tuple[str, ...] = ()) -> Path:
    root.mkdir()
    for d in dirs + opaque:
        (root / d).mkdir(parents=True, exist_ok=True)
    for d in opaque:
        (root / d / ".wh..wh..opq").write_bytes(b"")
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text(f)
    for w in whiteouts:
        path = root / w
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / (".wh." + path.name)).write_bytes(b"")
    return root


def test_lookup_follows_the_topmost_layer_that_has_each_component(tmp_path: Path) -> None:
    bottom = _layer(tmp_path / "b", dirs=("usr/lib", "app"), files=("etc/passwd",))
    top = _layer(tmp_path / "t", dirs=("usr",))
    found = merged_lookup([top, bottom], "usr/lib/new")
    assert found is not None
    assert [(p, w) for p, _, w in found] == [("usr", str(top / "usr")),
                                            ("usr/lib", str(bottom / "usr/lib"))]
    assert [p for p, _, _ in merged_lookup([top, bottom], "app") or []] == ["app"]  # exists
    assert merged_lookup([top, bottom], "nothing/here") == []


def test_whiteouts_and_opaque_directories_hide_what_is_below(tmp_path: Path) -> None:
    bottom = _layer(tmp_path / "b", dirs=("app/old", "data/keep"))
    top = _layer(tmp_path / "t", whiteouts=("app",), opaque=("data",))
    assert merged_lookup([top, bottom], "app/old") == []
    assert [p for p, _, _ in merged_lookup([top, bottom], "data/keep") or []] == ["data"]


def test_a_file_or_symlink_in_the_way_needs_a_real_lookup(tmp_path: Path) -> None:
    bottom = _layer(tmp_path / "b", files=("etc/hosts",), dirs=("usr/lib",))
    os.symlink("usr/lib", bottom / "lib")
    assert merged_lookup([bottom], "etc/hosts/x") is None
    assert merged_lookup([bottom], "lib/x") is None
    found = merged_lookup([bottom], "lib")  # the symlink itself, as the last component
    assert found is not None and [p for p, _, _ in found] == ["lib"]
