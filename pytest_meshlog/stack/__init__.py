"""The reference log-forwarding stack: real processes, pipes, sockets and files (SPEC 1-2)."""

from .client import BarrierOutcome
from .config import ConfigError, StackConfig
from .mesh_client import ChildSpec, ExitInfo, LoggingMeshClient, MeshError, StopOutcome

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
