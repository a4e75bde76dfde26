"""The reference log-forwarding stack: real processes, pipes, sockets and files (SPEC 1-2).

Exports load lazily: every child and bootstrap host imports this package on start-up,
and must not pay for the driver's half (the client pulls in rapidfuzz and numpy).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import ENVS, ConfigError, Env, StackConfig
    from .journal import Ev
    from .mesh_client import ChildSpec, LoggingMeshClient
    from .outcomes import (
        BarrierOutcome,
        BarrierStatus,
        ExitInfo,
        MeshError,
        StopOutcome,
        StopProblem,
    )

_MODULE_OF = {
    "BarrierOutcome": "outcomes",
    "BarrierStatus": "outcomes",
    "ENVS": "config",
    "Env": "config",
    "Ev": "journal",
    "StopProblem": "outcomes",
    "ConfigError": "config",
    "StackConfig": "config",
    "ChildSpec": "mesh_client",
    "ExitInfo": "outcomes",
    "LoggingMeshClient": "mesh_client",
    "MeshError": "outcomes",
    "StopOutcome": "outcomes",
}
__all__ = [
    "ENVS",
    "BarrierOutcome",
    "BarrierStatus",
    "ChildSpec",
    "ConfigError",
    "Env",
    "Ev",
    "ExitInfo",
    "LoggingMeshClient",
    "MeshError",
    "StackConfig",
    "StopOutcome",
    "StopProblem",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
