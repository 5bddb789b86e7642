"""Shared fixtures. The integration fixtures live in tests/fixtures/ and are loaded here."""
from __future__ import annotations

import os

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run, so that a suite that passed passes
# again (CI must not meet a new example by chance); HYPOTHESIS_PROFILE=hunt draws fresh ones.
settings.register_profile("pybuild", derandomize=True)
settings.register_profile("hunt", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "pybuild"))

pytest_plugins: list[str] = [
    "tests.fixtures.registry",
    "tests.fixtures.rootfs",
    "tests.fixtures.buildtools",
    "tests.fixtures.auth_registry",
    "tests.fixtures.docker_builder",
    "tests.fixtures.secure_registry",
    "tests.fixtures.fault_proxy",
    "tests.fixtures.crossarch",
    "tests.fixtures.gitserver",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)
