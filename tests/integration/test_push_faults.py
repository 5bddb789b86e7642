"""Pushing through a proxy of the tests that breaks things, in front of Debian's docker-registry:
500s, 429s with Retry-After and dropped connections on a share of the requests; a PATCH dropped
after it was sent (resumed from the registry's Range in the same upload session) and one cut
half-way through its body (this registry refuses to resume a session whose size moved, so the
blob starts again). The push completes each time, and skopeo and a pull see the same digest; a
registry that keeps failing gives one sentence naming it, the blob and the status, and no
manifest."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.fault_proxy import FaultPlan
from tests.integration.pushutil import (
    assert_one_sentence_error,
    imported,
    skopeo_digest,
    stored_digest,
)

CHUNK = str(1 << 20)


def _push_via(tmp_path: Path, registry, proxy, repo: str, big: int):  # type: ignore[no-untyped-def]
    name = f"{proxy.host}/{repo}:1"
    # waits between retries are capped short here; Retry-After itself is tested in tests/unit
    s = imported(tmp_path, name, big=big, env={"PYBUILD_PUSH_CHUNK_SIZE": CHUNK,
                                               "PYBUILD_REGISTRY_MAX_BACKOFF": "0.3"})
    return s, name


def test_push_survives_500_429_and_dropped_connections(registry, fault_proxy_factory, tmp_path):
    proxy = fault_proxy_factory(registry.host, FaultPlan(
        every=3, budget={"500": 2, "429": 2, "drop": 2}, retry_after="1"))
    s, name = _push_via(tmp_path, registry, proxy, "faults/app", big=3 << 20)
    before = stored_digest(s, name)
    pushed = s.run("push", name)
    digest = stored_digest(s, name)
    assert digest in pushed.stdout
    # the name moved to the compressed manifest of the same image: nothing left dangling
    assert digest != before and s.run("images", "-f", "dangling=true", "-q").stdout == ""
    assert sorted(proxy.faults()) == ["429", "429", "500", "500", "drop", "drop"]
    assert skopeo_digest(f"{registry.host}/faults/app:1", "--tls-verify=false") == digest
    other = imported(tmp_path / "pull", "unused:1")
    other.run("pull", f"{registry.host}/faults/app:1")
    assert stored_digest(other, f"{registry.host}/faults/app:1") == digest


@pytest.mark.parametrize("fault", ["drop", "cut-patch"])
def test_chunked_upload_after_a_broken_patch(registry, fault_proxy_factory, tmp_path, fault):
    proxy = fault_proxy_factory(registry.host, FaultPlan(every=2, budget={fault: 1},
                                                         methods=("PATCH",)))
    s, name = _push_via(tmp_path, registry, proxy, f"{fault}/app", big=3 << 20)
    s.run("push", name)
    assert proxy.faults() == [fault]
    repo = f"{registry.host}/{fault}/app:1"
    assert skopeo_digest(repo, "--tls-verify=false") == stored_digest(s, name)
    if fault != "drop":
        return  # this registry refuses to resume a session whose size moved: the blob restarts
    calls = [(m, p.split("?")[0]) for m, p, _ in proxy.log]
    dropped = next(i for i, (_, _, what) in enumerate(proxy.log) if what == "drop")
    session = calls[dropped][1]
    # one status request, then the same session goes on: the blob did not start again
    assert ("GET", session) in calls[dropped:]
    assert [c for c in calls[dropped:] if c[0] == "PATCH"] and all(
        p == session for m, p in calls[dropped:] if m == "PATCH")
    assert [m for m, _ in calls].count("POST") == 2  # config and layer, once each


def test_a_registry_that_keeps_failing_is_named_and_nothing_is_pushed(registry, fault_proxy_factory,
                                                                     tmp_path):
    proxy = fault_proxy_factory(registry.host, FaultPlan(every=1, budget={"500": 1000},
                                                         methods=("PUT",), retry_after="0"))
    s, name = _push_via(tmp_path, registry, proxy, "broken/app", big=0)
    failed = s.run("push", name, check=False)
    assert_one_sentence_error(failed, f"{proxy.host}/broken/app", "blob sha256:", "HTTP 500")
    assert "digest:" not in failed.stdout
    assert not any(m == "PUT" and "/manifests/" in p and what == "forwarded"
                   for m, p, what in proxy.log)


def test_build_push_every_tag_with_a_mount_from_the_base_repository(registry, tmp_path):
    base = f"{registry.host}/mounts/base:1"
    s = imported(tmp_path, base, big=1 << 20)
    s.run("push", base)
    project = tmp_path / "project"
    project.mkdir()
    (project / "Dockerfile").write_text(f"FROM {base}\nLABEL built=yes\n")
    meta = tmp_path / "meta.json"
    done = s.run("build", "--progress", "plain", "--push", "-t", f"{registry.host}/mounts/app:1",
                 "-t", f"{registry.host}/mounts/app:2", "--metadata-file", str(meta), str(project))
    assert "mounted from mounts/base" in done.stderr
    digest = json.loads(meta.read_text())["containerimage.digest"]
    for tag in ("1", "2"):
        assert skopeo_digest(f"{registry.host}/mounts/app:{tag}", "--tls-verify=false") == digest
    s.run("build", "--progress", "plain", "-o", f"type=registry,name={registry.host}/mounts/out:x",
          str(project))
    assert skopeo_digest(f"{registry.host}/mounts/out:x", "--tls-verify=false") == digest
