"""`--meshlog-stack=torchrun`: the catalog under PyTorch's launcher (`torch.distributed.run`).

Each mesh is one `torchrun --standalone --nproc-per-node=N --max-restarts=0 --tee=3
--log-dir=D` whose ranks run the fake_procs scripts (`rank.py`). Nothing in this package
imports torch in the pytest process: the launcher is a subprocess. Install with
`pip install 'pytest-meshlog[torchrun]'`.
"""

from __future__ import annotations

import importlib.util

from ..backend import MeshPlan

INSTALL_HINT = "pip install 'pytest-meshlog[torchrun]'"
TESTED_VERSION = "2.13.0"

NOT_APPLICABLE = {
    "barrier": "torchrun has no flush: its agent tails the ranks' log files on its own "
    "schedule and nothing tells a caller that what a rank wrote has reached the console",
    "journal": "torchrun keeps no journal of its teardown events (EOF, Flush(None), "
    "barriers); only its console and its files are observable",
    "aggregate": "torchrun has no aggregation of similar lines",
    "set_mode": "a running torchrun's tee cannot be switched",
    "env:test": "torchrun has no Test environment: with --tee it always writes the files",
    "hosts>1": "this backend runs one node (--standalone); a second needs a second agent",
    "fault:close_channel": "torchrun has no channel between a rank and its agent to close",
    "fault:slow_client": "torchrun's console tailer has no hook to slow it down",
    "fault:slow_files": "the ranks write their files themselves (redirected fds): there is "
    "no writer to slow",
    "fault:file_write_error": "the ranks write their files themselves (redirected fds): "
    "there is no writer to fail",
    "fault:hostile_peer": "torchrun's ranks have no socket of the log path to attack",
}
"""Features of the reference stack this backend cannot provide, and why."""


def missing() -> str | None:
    """What is missing to run torchrun here, or None; never imports torch."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    return None


class TorchrunBackend:
    """Each mesh: one torchrun launcher, one local rank per script."""

    name = "torchrun"

    def unsupported(self, feature: str) -> str | None:
        return NOT_APPLICABLE.get(feature)

    def launch(self, plan: MeshPlan) -> TorchrunMeshClient:
        return TorchrunMeshClient(plan)


from .client import TorchrunMeshClient  # noqa: E402  (after MeshPlan: no import cycle)
