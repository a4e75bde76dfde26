"""`--meshlog-stack=ray`: the catalog on Ray (PyPI `ray`), one local Ray cluster per mesh.

Nothing in this package imports Ray in the pytest process: the mesh's driver program runs
in a helper process (`helper.py`) and each rank is a Ray actor (`script_actor.py`) whose
worker process runs the fake_procs script. Install with `pip install 'pytest-meshlog[ray]'`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import itertools
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the actor module imports this package in every worker: keep it light
    from ..backend import MeshPlan
    from .client import RayMeshClient

INSTALL_HINT = "pip install 'pytest-meshlog[ray]'"
TESTED_VERSION = "2.60.0"

NOT_APPLICABLE = {
    "journal": "Ray keeps no journal of its log path's teardown events (EOF, flushes, "
    "barrier starts and acks); only what the driver prints and the worker files hold is "
    "observable",
    "barrier": "Ray has no flush of its log path: nothing tells a driver that every line a "
    "worker wrote before some point has been printed (the log monitor tails the worker "
    "files on its own schedule)",
    "set_mode": "Ray's log_to_driver is fixed when ray.init() runs",
    "file_gate": "Ray has no HYPERACTOR_FORCE_FILE_LOG or environment rule: every worker's "
    "stdout and stderr always go to its own files in the session's log folder",
    "env:test": "Ray has no test environment",
    "fault:close_channel": "Ray has no per-worker log channel the harness can close: the log "
    "monitor tails the worker's files",
    "fault:slow_client": "Ray's driver-side log printing has no hook to slow it down",
    "fault:slow_files": "a worker writes its files directly (they are its fds 1 and 2): "
    "there is no file writer to slow down",
    "fault:file_write_error": "a worker writes its files directly: there is no file writer "
    "whose errors a stack could report",
    "fault:hostile_peer": "Ray's log path has no socket a worker's peer connects to (the log "
    "monitor reads files and publishes through the GCS)",
    "fault:sigkill_forwarder": "Ray has no forwarder inside the worker to kill (the log "
    "monitor is one process per node)",
    "hosts>1": "this backend runs one local Ray node (ray.init()); a second host needs a "
    "second machine joining the cluster",
}
"""Features of the reference stack this backend cannot provide, and why."""


def missing() -> str | None:
    """What is missing to run Ray here, or None; never imports it."""
    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed"
    version = importlib.metadata.version("ray")
    if version != TESTED_VERSION:  # the recorded outcomes are for the pinned version
        return f"Ray {version} is installed; this backend is pinned to {TESTED_VERSION}"
    return None


class RayBackend:
    """Each mesh: a helper process running a Ray driver program, one actor per script."""

    name = "ray"
    _count = itertools.count()

    def unsupported(self, feature: str) -> str | None:
        return NOT_APPLICABLE.get(feature)

    def launch(self, plan: MeshPlan) -> RayMeshClient:
        from .client import RayMeshClient

        return RayMeshClient(plan, f"ml{os.getpid()}n{next(self._count)}")
