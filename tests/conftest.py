"""Shared fixtures. The integration fixtures live in tests/fixtures/ and are loaded here."""
from __future__ import annotations

import os

import pytest

pytest_plugins: list[str] = [
    "tests.fixtures.registry",
    "tests.fixtures.rootfs",
    "tests.fixtures.buildtools",
    "tests.fixtures.auth_registry",
    "tests.fixtures.docker_builder",
    "tests.fixtures.secure_registry",
    "tests.fixtures.fault_proxy",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)
