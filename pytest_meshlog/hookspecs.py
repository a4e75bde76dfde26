"""Hook specifications other plugins and conftests implement (registered via pytest_addhooks)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from fake_procs.catalog import Catalog

    from .backend import StackBackend
    from .report import TeardownReport


@pytest.hookspec
def pytest_meshlog_add_scripts(catalog: Catalog) -> None:
    """Add named fake-proc scripts: ``catalog.add(name, factory)``."""


@pytest.hookspec(firstresult=True)
def pytest_meshlog_make_stack(config: pytest.Config, name: str) -> StackBackend | None:
    """Return the stack backend called `name`, or None to let another plugin answer.

    The first non-None result wins; ``reference`` (this repository's stack) answers last.
    """


@pytest.hookspec
def pytest_meshlog_teardown_report(item: pytest.Item, report: TeardownReport) -> Any:
    """Receive the teardown report of every mesh a test spawned (export metrics, etc.)."""
