"""The pytest plugin (entry point `meshlog`): options, markers, fixtures and the catalog."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("meshlog", "teardown-correctness harness for log-forwarding meshes")
    group.addoption(
        "--meshlog",
        action="store_true",
        default=False,
        help="run the built-in teardown scenario catalog and print a teardown summary",
    )
