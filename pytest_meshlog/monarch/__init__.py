"""`--meshlog-stack=monarch`: the catalog on Meta's Monarch runtime (PyPI `torchmonarch`).

Nothing in this package imports Monarch in the pytest process: the driver side runs in a
helper process (`helper.py`), the procs run `proc_actor.ScriptActor`. Install with
`pip install 'pytest-meshlog[monarch]'`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import itertools
import os

from ..backend import MeshPlan

INSTALL_HINT = "pip install 'pytest-meshlog[monarch]'"
TESTED_VERSION = "0.7.0"

NOT_APPLICABLE = {
    "journal": "Monarch keeps no journal of its teardown events (tee EOF, Flush(None), "
    "barrier starts and acks); only what it prints and writes is observable",
    "fault:close_channel": "Monarch has no hook to close one proc's log channel from outside",
    "fault:slow_client": "Monarch's LogClientActor has no hook to slow it down",
    "fault:slow_files": "Monarch's FileAppender has no hook to slow its writes",
    "fault:file_write_error": "Monarch's FileAppender path cannot be pointed at a failing "
    "device (it is /tmp/$USER/ or /logs/, fixed by the environment)",
    "env:test": "Monarch's Env::Test exists only in its own unit-test builds; a released "
    "wheel cannot select it",
    "fault:hostile_peer": "Monarch's channels are its own (hyperactor): this harness has no "
    "socket of a proc to attack, and no way to tell its peers apart",
    "set_mode": "the harness cannot reach Monarch's logging_option of a running mesh",
    "hosts>1": "this backend runs one local host (this_host()); a second host needs a "
    "remote-host launcher",
}
"""Features of the reference stack this backend cannot provide, and why."""


def missing() -> str | None:
    """What is missing to run Monarch here, or None; never imports it."""
    if importlib.util.find_spec("monarch") is None:
        return "Monarch (torchmonarch) is not installed"
    try:
        version = importlib.metadata.version("cloudpickle")
    except importlib.metadata.PackageNotFoundError:
        return "cloudpickle is not installed"
    if int(version.split(".")[0]) < 3:
        return f"cloudpickle {version} is too old for Monarch (it needs >= 3)"
    return None


class MonarchBackend:
    """Each mesh: a helper process running Monarch's driver side, one proc per script."""

    name = "monarch"
    _count = itertools.count()

    def unsupported(self, feature: str) -> str | None:
        return NOT_APPLICABLE.get(feature)

    def launch(self, plan: MeshPlan) -> MonarchMeshClient:
        mesh = f"ml{os.getpid()}n{next(self._count)}"  # unique: it names the client's lines
        return MonarchMeshClient(plan, mesh)


from .client import MonarchMeshClient  # noqa: E402  (after MeshPlan: no import cycle)
