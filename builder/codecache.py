"""Compiled dataclass methods, kept between runs like bytecode.

``@dataclass`` writes the source of each class's ``__init__``, ``__repr__``, ``__eq__``,
``__hash__``, ``__setattr__`` ... and compiles it every time its module is imported. Python
keeps no bytecode for that generated source, so for pybuild's ~80 dataclasses every start
compiled ~480 small functions again: about 50 ms, more than half of all the import time of a
build (measured on the benchmark's VM; see ``bench/README.md``).

``install()`` routes the ``dataclasses`` module's calls to ``exec`` through ``_exec``, which
looks the source text up in a table kept beside the package's bytecode
(``__pycache__/dataclass-methods.<tag>.marshal``) and compiles only what it has not seen.
The table is keyed by the whole source text and named after the interpreter's bytecode tag,
so a hit gives exactly the code object that compiling would give: the class comes out the
same, only sooner. Like ``.pyc`` files, the table is written only where Python would write
bytecode (not under ``PYTHONDONTWRITEBYTECODE``) and is replaced whole (a temporary file
renamed over it); a table that cannot be read is ignored and written again.

Only the process that installed it writes it (forked children do not), once, at exit.

``install()`` also leaves ``inspect`` (which ``dataclasses`` imports, with ast, dis and
tokenize) to be loaded on first use: ``dataclasses`` needs it only for a class without a
docstring, and every pybuild class has one.
"""
import builtins
import marshal
import os
import sys

__all__ = ["install", "stats"]

# More entries than pybuild's own classes ever need: past it, a table grown by old source
# versions is cut back to what this process used.
MAX_ENTRIES = 4096

_state: dict = {"file": None, "table": {}, "new": {}, "used": set(), "pid": 0,
                "hits": 0, "misses": 0}


def default_file() -> str:
    tag = sys.implementation.cache_tag or "python"
    opt = f".opt-{sys.flags.optimize}" if sys.flags.optimize else ""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__",
                        f"dataclass-methods.{tag}{opt}.marshal")


def install(path: str | None = None) -> None:
    """Start serving ``dataclasses``' generated source from the table at ``path`` (default:
    beside this package's bytecode). Call before the modules defining dataclasses are
    imported; a second call does nothing."""
    if "dataclasses" not in sys.modules:
        _defer_inspect()
    import dataclasses

    if getattr(dataclasses, "exec", None) is _exec:
        return
    file = path or default_file()
    table: dict = {}
    try:
        with open(file, "rb") as f:
            loaded = marshal.load(f)
        if type(loaded) is dict:
            table = loaded
    except (OSError, EOFError, ValueError, TypeError):
        pass
    _state.update(file=file, table=table, new={}, used=set(), pid=os.getpid(), hits=0, misses=0)
    # A module global named `exec` shadows the builtin for the dataclasses module's own code.
    dataclasses.exec = _exec
    if not sys.dont_write_bytecode:
        import atexit

        atexit.register(_save)


def _defer_inspect() -> None:
    """Let ``dataclasses`` import ``inspect`` (with ast, dis, tokenize: 5-6 ms) only when
    something uses it. ``dataclasses`` calls it for nothing but the docstring of a class
    that has none, and pybuild's classes all have one (tests/unit/test_startup.py). Until
    then ``inspect`` is a module that loads the real one on its first attribute asked."""
    if "inspect" in sys.modules:
        return
    import types

    stand_in = types.ModuleType("inspect", "inspect, loaded on first use (builder.codecache)")
    stand_in.__spec__ = None  # the import system asks for it, and must not load anything

    def load(name: str) -> object:
        real = sys.modules.get("inspect")
        if real is None or real is stand_in:
            import importlib

            sys.modules.pop("inspect", None)
            real = importlib.import_module("inspect")
        return getattr(real, name)

    setattr(stand_in, "__getattr__", load)  # noqa: B010 - a module's own __getattr__ (PEP 562)
    sys.modules["inspect"] = stand_in


def stats() -> tuple[int, int]:
    """(hits, misses) of this process: generated sources found in the table / compiled."""
    return _state["hits"], _state["misses"]


def _exec(source, globals=None, locals=None, /):  # noqa: A002 - the builtin's own signature
    if type(source) is str:
        code = None
        blob = _state["table"].get(source)
        if type(blob) is bytes:
            try:
                code = marshal.loads(blob)
            except (EOFError, ValueError, TypeError):
                code = None
        if code is None:
            # What exec() of the text would compile: no future flags of ours leak in.
            code = compile(source, "<string>", "exec", dont_inherit=True)
            _state["new"][source] = marshal.dumps(code)
            _state["misses"] += 1
        else:
            _state["hits"] += 1
        _state["used"].add(source)
        source = code
    return builtins.exec(source, globals, locals)


def _save() -> None:
    if os.getpid() != _state["pid"] or not _state["new"] or not _state["file"]:
        return
    table = {**_state["table"], **_state["new"]}
    if len(table) > MAX_ENTRIES:
        table = {source: blob for source, blob in table.items() if source in _state["used"]}
    file = _state["file"]
    tmp = f"{file}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(file), exist_ok=True)
        with open(tmp, "wb") as f:
            marshal.dump(table, f)
        os.replace(tmp, file)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
