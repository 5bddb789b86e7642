"""Rootless user-namespace logic that needs no kernel: /etc/subuid parsing and the error an
id outside the namespace's map gives (the namespace itself: tests/integration/test_rootless_*)."""
from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import ExecError
from builder.executor import userns


def test_subids_finds_the_user_by_name_or_uid(tmp_path: Path) -> None:
    table = tmp_path / "subuid"
    table.write_text("# comment\nalice:100000:65536\nbroken:x:1\nzero:5:0\n1001:200000:1000\n")
    assert userns.subids(str(table), "alice", 1000) == (100000, 65536)
    assert userns.subids(str(table), "bob", 1001) == (200000, 1000)
    assert userns.subids(str(table), "broken", 7) is None
    assert userns.subids(str(table), "zero", 8) is None  # an empty range maps nothing
    assert userns.subids(str(tmp_path / "absent"), "alice", 1000) is None


def test_an_unmapped_id_is_named_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(userns, "mapped_ranges",
                        lambda kind: [(0, 1)] if kind == "uid" else [(0, 1), (1, 65537)])
    userns.check_mapped(0, 1000, "COPY --chown")
    assert userns.is_mapped("gid", [0, 1, 65536]) and not userns.is_mapped("uid", [0, 1])
    with pytest.raises(ExecError) as caught:
        userns.check_mapped(1000, 0, "COPY --chown")
    assert caught.value.message == ("COPY --chown needs uid 1000, which the rootless user "
                                    "namespace does not map (it has uids 0)")
    assert "/etc/subuid" in (caught.value.hint or "")
    with pytest.raises(ExecError, match=r"needs gid 70000, .* \(it has gids 0, 1-65536\)"):
        userns.check_mapped(0, 70000, "COPY --chown")
