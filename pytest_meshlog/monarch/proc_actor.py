"""The actor every Monarch proc of a mesh runs: it executes one fake_procs script.

Imported only inside Monarch procs (and the helper that spawns them), never by the
plugin itself. The script runs in a thread so the actor stays free to take barrier
acks; crash and exit steps still end the whole proc, as they end a reference child.
A script that ends on its own leaves its proc alive, as a Monarch user's actor does:
the proc ends when the mesh is stopped.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from monarch.actor import Actor, current_rank, endpoint

from fake_procs.executor import execute
from fake_procs.standalone import StandaloneRuntime


class ProcRuntime(StandaloneRuntime):
    """What `fake_procs.executor.execute` needs (fake_procs.runtime.Runtime): the
    stand-in runtime, with no signals installed; barrier acks come from the helper after
    Monarch's own flush completed."""


class ScriptActor(Actor):  # type: ignore[misc]  # Monarch ships no type information
    """One per proc. `prepare` answers with the proc's rank and pid; `run` (a broadcast)
    starts the script, so a script that crashes at once cannot fail the spawn itself."""

    def __init__(self) -> None:
        self.rt: ProcRuntime | None = None
        self.script: dict[str, object] = {}

    def _prepare(self, scripts_dir: str, record_dir: str) -> tuple[int, int]:
        rank = int(current_rank()["gpus"])
        self.script = json.loads(Path(scripts_dir, f"rank{rank}.json").read_text("utf-8"))
        self.rt = ProcRuntime(rank, record_dir)
        return rank, os.getpid()

    def _run(self) -> None:
        args = (self.script, self.rt)
        threading.Thread(target=execute, args=args, name="script", daemon=True).start()

    def _ack(self, version: int) -> None:
        if self.rt is not None:
            self.rt.ack(version)

    # endpoints (not decorator syntax: Monarch is untyped, and mypy strict rejects that)
    prepare = endpoint(_prepare)
    run = endpoint(_run)
    ack = endpoint(_ack)
