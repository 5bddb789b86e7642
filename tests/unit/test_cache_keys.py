"""docs/cache-keys.md is exact: its worked example recomputes, by hand and by the code."""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from builder.cache.keys import KEY_VERSION, base_key, step_key
from builder.context import BuildContext
from builder.digest import Digest, canonical_json

DOC = Path(__file__).resolve().parents[2] / "docs" / "cache-keys.md"


def _example() -> tuple[dict[str, str], list[str]]:
    """The fenced blocks of the worked example by label, and the `= sha256:...` results."""
    text = DOC.read_text()
    section = text[text.index("## Worked example"):]
    blocks = {m.group(1): "\n".join(line.strip() for line in m.group(2).splitlines()).strip("\n")
              for m in re.finditer(r"```([\w-]+)\n(.*?)```", section, re.S)}
    results = re.findall(r"^\s*= `(sha256:[0-9a-f]{64})`", section, re.M)
    return blocks, results


def _sha(data: str) -> str:
    return "sha256:" + hashlib.sha256(data.encode()).hexdigest()


def test_worked_example_recomputes_by_hand() -> None:
    blocks, (checksum, base, key) = _example()
    assert _sha(blocks["checksum"] + "\n") == checksum
    assert _sha(blocks["base-key"]) == base
    assert _sha(blocks["step-key"]) == key
    doc = json.loads(blocks["step-key"])
    assert canonical_json(doc).decode() == blocks["step-key"]  # the block is canonical
    assert doc["version"] == KEY_VERSION and doc["parent"] == base
    assert doc["op"]["content"] == [checksum]


def test_worked_example_is_what_the_code_computes(tmp_path: Path) -> None:
    blocks, (checksum, base, key) = _example()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_bytes(b"hello\n")
    os.chmod(ctx / "a.txt", 0o644)
    (ctx / "Dockerfile").write_text(blocks["Dockerfile"])
    tree = BuildContext.open(ctx)
    assert str(tree.checksum(tree.select("a.txt"))) == checksum
    parent = base_key(manifest_digest=None)
    assert str(parent.digest) == base
    op = json.loads(blocks["step-key"])["op"]
    assert str(step_key(parent, op).digest) == key


def test_keys_do_not_depend_on_where_or_who(tmp_path: Path) -> None:
    """Two context paths, two stat caches (stores), other owners and times: the same key."""
    digests = []
    for n, (uid, mtime) in enumerate([(0, 1_000_000_000), (1234, 1_700_000_000)]):
        ctx = tmp_path.joinpath(f"where-{n}", *["deeper"] * n, "ctx")
        (ctx / "app").mkdir(parents=True)
        (ctx / "app" / "main.py").write_text("print('hi')\n")
        (ctx / "app" / "lib.py").write_text("x = 1\n")
        os.symlink("main.py", ctx / "app" / "link")
        for p in (ctx / "app", ctx / "app" / "main.py", ctx / "app" / "lib.py"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
            if os.geteuid() == 0:
                os.lchown(p, uid, uid)
            os.utime(p, (mtime, mtime))
        tree = BuildContext.open(ctx)
        checksum = tree.checksum(tree.select("app"), stat_cache=tmp_path / f"store-{n}" / "statcache.json")
        op = {"kind": "copy", "sources": ["app"], "dest": "/app", "content": [str(checksum)]}
        digests.append(step_key(base_key(manifest_digest="sha256:" + "a" * 64), op).digest)
    assert digests[0] == digests[1]
    assert isinstance(digests[0], Digest)
