"""The reference log-forwarding stack: real processes, pipes, sockets and files (SPEC 1-2).

Exports load lazily: every child and bootstrap host imports this package on start-up,
and must not pay for the driver's half (the client pulls in rapidfuzz and numpy).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import BarrierOutcome
    from .config import ConfigError, StackConfig
    from .mesh_client import ChildSpec, ExitInfo, LoggingMeshClient, MeshError, StopOutcome

_MODULE_OF = {
    "BarrierOutcome": "client",
    "ConfigError": "config",
    "StackConfig": "config",
    "ChildSpec": "mesh_client",
    "ExitInfo": "mesh_client",
    "LoggingMeshClient": "mesh_client",
    "MeshError": "mesh_client",
    "StopOutcome": "mesh_client",
}
__all__ = [
    "BarrierOutcome",
    "ChildSpec",
    "ConfigError",
    "ExitInfo",
    "LoggingMeshClient",
    "MeshError",
    "StackConfig",
    "StopOutcome",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
