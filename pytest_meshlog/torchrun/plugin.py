"""The `pytest_meshlog_make_stack` implementation that answers `torchrun`."""

from __future__ import annotations

import pytest

from ..backend import StackBackend


@pytest.hookimpl(trylast=True)
def pytest_meshlog_make_stack(config: pytest.Config, name: str) -> StackBackend | None:
    if name != "torchrun":
        return None
    from . import INSTALL_HINT, TorchrunBackend, missing

    problem = missing()
    if problem is not None:
        raise pytest.UsageError(
            f"--meshlog-stack=torchrun: {problem}; install it with {INSTALL_HINT}"
        )
    return TorchrunBackend()
