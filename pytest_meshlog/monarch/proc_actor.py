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
import time
from pathlib import Path

from monarch.actor import Actor, current_rank, endpoint

from fake_procs.executor import execute


class ProcRuntime:
    """What `fake_procs.executor.execute` needs (fake_procs.runtime.Runtime); barrier acks
    come from the helper after Monarch's own flush completed."""

    def __init__(self, rank: int, record_dir: str) -> None:
        self.rank = rank
        self.record_dir: str | None = record_dir
        self.output_lock = threading.Lock()
        self.stopping = threading.Event()
        self._acked = 0
        self._cond = threading.Condition()

    def ack(self, version: int) -> None:
        with self._cond:
            self._acked = max(self._acked, version)
            self._cond.notify_all()

    def wait_barrier(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            start = self._acked
            while self._acked <= start:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.05))
            return self._acked


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
