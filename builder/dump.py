"""buildkit's AST dump format (``Node.Dump()``), the format of its parser's ``result`` files.

One line per instruction: ``(keyword ["--flags"] "arg" ...)``, keyword lower-cased, strings
quoted the way Go's strconv.Quote quotes them, ONBUILD's nested instruction in parentheses.
"""
from __future__ import annotations

from collections.abc import Iterable

from .parse_args import Node
from .parse_go import go_quote, go_quote_list, go_trim_space

__all__ = ["dump_buildkit", "dump_node"]


def dump_node(node: Node) -> str:
    """One instruction, without the surrounding parentheses."""
    parts = [node.name]
    if node.flags:
        parts.append(go_quote_list(node.flags))
    if node.child is not None:
        parts.append("(" + dump_node(node.child) + ")")
    parts.extend(go_quote(arg) for arg in node.args)
    return go_trim_space(" ".join(parts))


def dump_buildkit(nodes: Iterable[Node] | object) -> str:
    """The whole parse, exactly as a ``result`` file holds it (newline-terminated lines).

    Accepts the nodes or anything with a ``nodes`` attribute (``parse_nodes``'s result)."""
    items = getattr(nodes, "nodes", nodes)
    return "".join("(" + dump_node(node) + ")\n" for node in items)  # type: ignore[union-attr]
