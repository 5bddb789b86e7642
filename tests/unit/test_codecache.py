"""builder.codecache: dataclass methods served from a table kept between runs must give
classes that behave exactly as freshly compiled ones. Each case runs a fresh interpreter,
because installing the cache changes the `dataclasses` module for the whole process."""
from __future__ import annotations

import json
import marshal
import os
import subprocess
import sys
from pathlib import Path

import builder

ROOT = Path(builder.__file__).resolve().parent.parent

# Classes with every kind of generated method, then what a user of them can observe.
SCRIPT = r'''
import dataclasses, inspect, json, sys
from builder import codecache
if sys.argv[1] != "-":
    codecache.install(sys.argv[1])
if len(sys.argv) > 2:
    codecache.MAX_ENTRIES = int(sys.argv[2])
from dataclasses import InitVar, dataclass, field

@dataclass(frozen=True, slots=True, order=True)
class Point:
    x: int
    y: int = 2
    tags: tuple[str, ...] = ()

@dataclass
class Bag:
    name: str
    items: list[int] = field(default_factory=list)
    secret: str = field(default="s", repr=False, compare=False)
    scale: InitVar[int] = 1
    def __post_init__(self, scale):
        self.items = [i * scale for i in self.items]

@dataclass(kw_only=True, eq=False)
class Opts:
    debug: bool = False

out = {}
p, q = Point(1), Point(1, 3, ("a",))
out["repr"] = [repr(p), repr(q), repr(Bag("b", [1, 2], scale=3)), repr(Opts(debug=True))]
out["eq"] = [p == Point(1), p == q, p < q, Bag("b") == Bag("b", secret="t"), Opts() == Opts()]
out["hash"] = hash(p) == hash(Point(1, 2))
try:
    p.x = 5
    out["frozen"] = "assigned"
except dataclasses.FrozenInstanceError as e:
    out["frozen"] = str(e)
try:
    Opts(True)
    out["kw_only"] = "accepted"
except TypeError as e:
    out["kw_only"] = str(e)
out["signature"] = [str(inspect.signature(c)) for c in (Point, Bag, Opts)]
out["doc"] = [c.__doc__ for c in (Point, Bag, Opts)]
out["annotations"] = [sorted(map(str, c.__init__.__annotations__.items())) for c in (Point, Bag, Opts)]
out["stats"] = codecache.stats()
print(json.dumps(out))
'''


def _run(table: str, *extra: str, env: dict[str, str] | None = None) -> dict:
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, table, *extra], capture_output=True,
                          text=True, cwd=ROOT, env={**base, "PYTHONPATH": str(ROOT), **(env or {})},
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _without_stats(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "stats"}


def test_a_second_run_compiles_nothing_and_gets_the_same_classes(tmp_path: Path) -> None:
    table = tmp_path / "methods.marshal"
    plain = _run("-")
    first = _run(str(table))
    second = _run(str(table))
    assert first["stats"][0] == 0 and first["stats"][1] > 10
    assert second["stats"] == [first["stats"][1], 0]
    assert _without_stats(first) == _without_stats(plain)
    assert _without_stats(second) == _without_stats(plain)
    assert plain["frozen"] == "cannot assign to field 'x'"
    assert plain["repr"][2] == "Bag(name='b', items=[3, 6])"


def test_an_unreadable_table_is_ignored_and_written_again(tmp_path: Path) -> None:
    table = tmp_path / "methods.marshal"
    table.write_bytes(b"\x00not marshal at all")
    result = _run(str(table))
    assert result["stats"][0] == 0 and result["stats"][1] > 10
    assert _without_stats(result) == _without_stats(_run("-"))
    with open(table, "rb") as f:
        assert len(marshal.load(f)) == result["stats"][1]
    assert [p.name for p in tmp_path.iterdir()] == ["methods.marshal"]  # no temporary left


def test_a_stale_entry_is_not_used_and_an_overfull_table_is_cut_to_what_was_used(tmp_path: Path) -> None:
    table = tmp_path / "methods.marshal"
    # A different source text, as an older version of a class would give.
    with open(table, "wb") as f:
        marshal.dump({"def stale(): pass": marshal.dumps(compile("x = 1", "<s>", "exec"))}, f)
    first = _run(str(table), "2")
    assert first["stats"][0] == 0
    with open(table, "rb") as f:
        kept = marshal.load(f)
    assert "def stale(): pass" not in kept and len(kept) == first["stats"][1]


def test_a_damaged_entry_is_compiled_again(tmp_path: Path) -> None:
    table = tmp_path / "methods.marshal"
    compiled = _run(str(table))["stats"][1]
    with open(table, "rb") as f:
        entries = marshal.load(f)
    with open(table, "wb") as f:
        marshal.dump({source: b"\xffdamaged" for source in entries}, f)
    result = _run(str(table))
    assert result["stats"] == [0, compiled]
    assert _without_stats(result) == _without_stats(_run("-"))


def test_nothing_is_written_where_python_writes_no_bytecode(tmp_path: Path) -> None:
    table = tmp_path / "methods.marshal"
    result = _run(str(table), env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert result["stats"][1] > 10
    assert not table.exists()


def test_inspect_is_loaded_only_when_something_uses_it(tmp_path: Path) -> None:
    code = r'''
import json, sys
from builder import codecache
codecache.install(sys.argv[1])
from dataclasses import dataclass

@dataclass(frozen=True)
class Documented:
    """Has its own docstring: dataclasses needs no inspect for it."""
    x: int

loaded = "ast" in sys.modules or "tokenize" in sys.modules
@dataclass
class Bare:
    y: int

import inspect
print(json.dumps([loaded, Bare.__doc__, str(inspect.signature(Documented)),
                  inspect is sys.modules["inspect"], inspect.isclass(Bare)]))
'''
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "t.marshal")], capture_output=True,
                         text=True, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert json.loads(out.stdout) == [False, "Bare(y: int)", "(x: int) -> None", True, True]
