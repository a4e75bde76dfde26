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
        """Take SIGTERM and SIGUSR1 in a watcher thread with sigwait, never in a handler:
        a handler that sets an Event can deadlock on the lock its own thread holds."""
        wanted = {signal.SIGTERM, signal.SIGUSR1}
        signal.pthread_sigmask(signal.SIG_BLOCK, wanted)  # inherited by every later thread
        threading.Thread(
            target=self._watch, args=(wanted,), name="standalone-signals", daemon=True
        ).start()

    def _watch(self, wanted: set[signal.Signals]) -> None:
        while True:
            if signal.sigwait(wanted) == signal.SIGTERM:
                self.stopping.set()
            else:
                self.ack()

    def ack(self, version: int | None = None) -> None:
        """Ack barrier `version`, or the next one (what the forwarder's ack does in a mesh)."""
        with self._cond:
            self._acked = self._acked + 1 if version is None else max(self._acked, version)
            self._cond.notify_all()

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
