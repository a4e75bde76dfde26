"""Stall watch: notices the spans in which this process was not run at all.

Deadlines measure wall time. When the machine itself stops (a VM's vCPUs not scheduled,
the kernel's soft lockups, a swap storm) or the process is SIGSTOPped, every wait in it
overruns at once and a healthy stack reads as a hung one. A thread that wakes every
`TICK` and finds itself late by more than `LATE`, with little CPU spent by the process
meanwhile, tells the two apart: a missed deadline then says that the process was not
run, and for how long, instead of leaving a failure nobody can explain.

One watch per process (`watch()`), run while a caller holds it (a `LoggingMeshClient`
from its start to its close).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

TICK = 0.05
"""How often the watch wakes (seconds)."""
LATE = 1.0
"""A wake-up later than this past its tick is a stall, if the process was not running."""
RAN = 0.5
"""The share of the gap the process must have spent on a CPU to count as running (a
thread holding the GIL in C code also makes the watch late, and is no stall)."""
KEPT = 1000


@dataclass(frozen=True)
class Stall:
    """A span in which this process got (almost) no CPU."""

    began: float
    """`time.monotonic()` at the last tick before it."""
    seconds: float
    cpu_s: float
    """CPU time the whole process used in the span."""
    wall: float
    """`time.time()` at its start, for humans and journals."""

    @property
    def ended(self) -> float:
        return self.began + self.seconds

    def fields(self) -> dict[str, float]:
        """As the journal keeps it (`process_stalled`)."""
        return {
            "seconds": round(self.seconds, 3),
            "cpu_s": round(self.cpu_s, 3),
            "began": self.wall,
        }

    def describe(self) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(self.wall))
        return f"{self.seconds:.1f} s from {clock} ({self.cpu_s * 1000:.0f} ms of CPU)"


def is_stall(gap: float, cpu_s: float, tick: float = TICK) -> bool:
    """Whether a wake-up `gap` seconds after the last one, with `cpu_s` of the process's
    CPU time spent in it, means the process was not run."""
    return gap - tick > LATE and cpu_s < RAN * gap


class StallWatch:
    """The watch thread, run while someone holds it, and the stalls it saw (the last
    `KEPT`, kept after it stops). It runs only while held: a thread left behind in a
    user's pytest process would meet their thread-leak checks and their `os.fork()`."""

    def __init__(self, tick: float = TICK) -> None:
        self.tick = tick
        self._stalls: deque[Stall] = deque(maxlen=KEPT)
        self._listeners: list[Callable[[Stall], None]] = []
        self._lock = threading.Lock()
        self._holders = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, listener: Callable[[Stall], None] | None = None) -> Callable[[], None]:
        """Run the watch until every holder has released it, telling `listener` (from the
        watch thread) of each stall; returns the release."""
        with self._lock:
            self._holders += 1
            if listener is not None:
                self._listeners.append(listener)
            if self._thread is None:
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, args=(self._stop,), name="meshlog-stall-watch", daemon=True
                )
                self._thread.start()
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                if listener is not None:
                    self._listeners.remove(listener)
                self._holders -= 1
                thread = self._thread if self._holders == 0 else None
                if thread is not None:
                    self._thread = None
                    self._stop.set()
            if thread is not None:
                thread.join(1.0)

        return release

    def _run(self, stop: threading.Event) -> None:
        last, last_cpu = time.monotonic(), time.process_time()
        while not stop.wait(self.tick):
            now, cpu = time.monotonic(), time.process_time()
            if is_stall(now - last, cpu - last_cpu, self.tick):
                self._saw(Stall(last, now - last, cpu - last_cpu, time.time() - (now - last)))
            last, last_cpu = now, cpu

    def _saw(self, stall: Stall) -> None:
        with self._lock:
            self._stalls.append(stall)
            listeners = list(self._listeners)
        for listener in listeners:
            with contextlib.suppress(Exception):  # a listener's failure must not end the watch
                listener(stall)

    def between(self, start: float, end: float | None = None) -> list[Stall]:
        """The stalls that overlap [start, end] (monotonic; `end` None: up to now)."""
        end = time.monotonic() if end is None else end
        with self._lock:
            return [s for s in self._stalls if s.ended > start and s.began < end]


_watch = StallWatch()


def watch() -> StallWatch:
    """This process's watch."""
    return _watch


def _forget_after_fork() -> None:
    global _watch
    _watch = StallWatch()  # its thread and holders stayed in the parent


os.register_at_fork(after_in_child=_forget_after_fork)


def during(start: float, end: float | None = None) -> str:
    """What to add to a message about a wait from `start` (monotonic) that overran: "" if
    this process was run throughout (or nobody held the watch), else how long it was not
    run, and when."""
    stalls = watch().between(start, end)
    if not stalls:
        return ""
    total = sum(s.seconds for s in stalls)
    spans = "; ".join(s.describe() for s in stalls[:3]) + ("; ..." if len(stalls) > 3 else "")
    return (
        f" (this process was not run for {total:.1f} s of that wait: {spans}; "
        "the machine or the process was stopped, or a thread held the GIL while it "
        "blocked: not only what was awaited)"
    )
