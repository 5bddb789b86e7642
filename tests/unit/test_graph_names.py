"""How a FROM word and a --from value find a stage: BuildKit keeps stage names lowercased,
looks a FROM word up as written (addState) and a --from value case-insensitively
(findStateByName). So `FROM Build` and `FROM Scratch` are image references, and invalid
ones, while `COPY --from=Build` names the stage `build`."""
from __future__ import annotations

import pytest

from builder.errors import GraphError
from builder.graph import BuildGraph, build_graph
from builder.parse import parse_dockerfile


def graph(text: str) -> BuildGraph:
    return build_graph(parse_dockerfile(text))


@pytest.mark.parametrize("text, line, word", [
    ("FROM busybox AS build\nFROM Build\n", 2, "Build"),
    ("FROM busybox AS Build\nFROM BUILD\n", 2, "BUILD"),
    ("FROM Scratch\n", 1, "Scratch"),
    ("FROM SCRATCH AS unused\nFROM busybox\n", 1, "SCRATCH"),
])
def test_a_from_word_in_another_case_is_an_invalid_image_name(text: str, line: int, word: str) -> None:
    with pytest.raises(GraphError) as err:
        graph(text)
    assert err.value.message.startswith(f'failed to parse stage name "{word}": invalid reference format: ')
    assert "must be lowercase" in err.value.message
    assert err.value.location is not None and err.value.location.start == line


def test_stage_names_as_written_and_from_values_in_any_case() -> None:
    g = graph("FROM busybox AS Build\nRUN true\nFROM build\nCOPY --from=BUILD /a /a\nFROM scratch\n")
    assert [(s.base.kind, s.base.stage) for s in g.stages] == [("image", None), ("stage", 0), ("scratch", None)]
    assert g.stages[1].deps == frozenset({0})
