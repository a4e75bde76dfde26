"""A stand-in for the mesh child runtime, for running a script without a mesh.

Same attributes as `pytest_meshlog.stack.child.ChildRuntime`. Stop and barrier acks come
from signals, so a test drives it from outside with real signals: SIGTERM sets `stopping`
(like the runtime's Stop), SIGUSR1 acks one barrier. It ends like the real runtime does:
take the output lock, flush Python's buffers, exit with the workload's code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import NoReturn


class StandaloneRuntime:
    def __init__(self, rank: int = 0, record_dir: str | None = None) -> None:
        self.rank = rank
        self.hostname = "localhost"
        self.proc_id = f"standalone[{rank}]"
        self.record_dir = record_dir
        self.output_lock = threading.Lock()
        self.stopping = threading.Event()
        self._acked = 0
        self._cond = threading.Condition()

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGUSR1, self._on_usr1)

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()

    def _on_usr1(self, signum: int, frame: FrameType | None) -> None:
        self.ack()

    def ack(self) -> None:
        """Ack one barrier (what the forwarder's ack does in a mesh)."""
        # Called from a signal handler: never block on the condition's lock.
        if self._cond.acquire(blocking=False):
            try:
                self._acked += 1
                self._cond.notify_all()
            finally:
                self._cond.release()
        else:
            self._acked += 1

    def wait_barrier(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            start = self._acked
            while self._acked <= start:
                left = deadline - time.monotonic()
                if left <= 0 or self.stopping.is_set():
                    return None
                self._cond.wait(min(left, 0.05))
            return self._acked

    def finish(self, code: int) -> NoReturn:
        self.stopping.set()
        self.output_lock.acquire()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)


def run_standalone(
    workload: Callable[[StandaloneRuntime], int | None], rank: int, record_dir: str | None
) -> NoReturn:
    rt = StandaloneRuntime(rank, record_dir)
    rt.install_signals()
    rt.finish(workload(rt) or 0)
