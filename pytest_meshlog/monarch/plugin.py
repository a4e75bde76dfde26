"""The `pytest_meshlog_make_stack` implementation that answers `monarch`."""

from __future__ import annotations

import pytest

from ..backend import StackBackend


@pytest.hookimpl(trylast=True)
def pytest_meshlog_make_stack(config: pytest.Config, name: str) -> StackBackend | None:
    if name != "monarch":
        return None
    from . import INSTALL_HINT, MonarchBackend, missing

    problem = missing()
    if problem is not None:
        raise pytest.UsageError(
            f"--meshlog-stack=monarch: {problem}; install it with {INSTALL_HINT}"
        )
    return MonarchBackend()
