"""The `pytest_meshlog_make_stack` implementation that answers `ray`."""

from __future__ import annotations

import pytest

from ..backend import StackBackend


@pytest.hookimpl(trylast=True)
def pytest_meshlog_make_stack(config: pytest.Config, name: str) -> StackBackend | None:
    if name != "ray":
        return None
    from . import INSTALL_HINT, RayBackend, missing

    problem = missing()
    if problem is not None:
        raise pytest.UsageError(f"--meshlog-stack=ray: {problem}; install it with {INSTALL_HINT}")
    return RayBackend()
