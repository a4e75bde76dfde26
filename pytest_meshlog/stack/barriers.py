"""The client's versioned flush barriers (SPEC 1.11): at most one is open, and every caller
gets an answer: completed, superseded by a newer barrier, or timed out naming the ranks
that did not ack."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .journal import Ev, Journal
from .outcomes import BarrierOutcome, BarrierStatus


@dataclass
class OpenBarrier:
    """A barrier still waiting for acks; its caller awaits `future`."""

    version: int
    expected: frozenset[int]
    started: float
    future: asyncio.Future[BarrierOutcome]
    acked: set[int] = field(default_factory=set)
    lost: set[int] = field(default_factory=set)


class Barriers:
    """Opens, acks and answers barriers; runs on the driver's stack loop."""

    def __init__(self, journal: Journal, before_complete: Callable[[], None]) -> None:
        self.journal = journal
        self.before_complete = before_complete
        """Called as a barrier completes (the client prints what it aggregated)."""
        self.version = 0
        self.open: OpenBarrier | None = None

    def start(self, expected: frozenset[int]) -> OpenBarrier:
        """StartSyncFlush: open barrier version+1; an open one is answered as superseded."""
        self.version += 1
        old = self.open
        barrier = OpenBarrier(
            self.version, expected, time.monotonic(), asyncio.get_running_loop().create_future()
        )
        self.open = barrier
        if old is not None:
            self.journal(Ev.BARRIER_SUPERSEDED, version=old.version, by=barrier.version)
            self._answer(old, "superseded")
        self.journal(Ev.BARRIER_STARTED, version=barrier.version, expected=len(expected))
        if not expected:
            self.complete(barrier)
        return barrier

    def ack(self, rank: int, version: int, via: str = "marker") -> None:
        barrier = self.open
        if barrier is None:
            self.journal(Ev.BARRIER_NO_OPEN, version=version, rank=rank)
            return
        if version != barrier.version:
            self.journal(Ev.BARRIER_STALE, version=version, rank=rank, current=barrier.version)
            return
        if rank not in barrier.expected or rank in barrier.acked:
            self.journal(Ev.BARRIER_UNEXPECTED_ACK, version=version, rank=rank)
            return
        barrier.acked.add(rank)
        self.journal(Ev.BARRIER_ACKED, version=version, rank=rank, via=via)
        if len(barrier.acked) >= len(barrier.expected):
            self.complete(barrier)

    def said_bye(self, rank: int) -> None:
        """A Bye means every line of that rank is relayed: as good as an ack."""
        barrier = self.open
        if barrier is not None and rank in barrier.expected and rank not in barrier.acked:
            self.ack(rank, barrier.version, via="bye")

    def lost_rank(self, rank: int) -> None:
        """The rank's connection is read to the end: no ack can come any more. Stop waiting
        for it (as for a dead child at barrier start); the outcome names it."""
        barrier = self.open
        if barrier is not None and rank in barrier.expected and rank not in barrier.acked:
            barrier.expected = barrier.expected - {rank}
            barrier.lost.add(rank)
            self.journal(Ev.BARRIER_RANK_LOST, version=barrier.version, rank=rank)
            if len(barrier.acked) >= len(barrier.expected):
                self.complete(barrier)

    def complete(self, barrier: OpenBarrier) -> None:
        self.before_complete()
        latency = time.monotonic() - barrier.started
        self.journal(Ev.BARRIER_COMPLETED, version=barrier.version, latency_s=latency)
        self._answer(barrier, "completed")

    def expire(self, barrier: OpenBarrier) -> None:
        """The caller's deadline passed: answer it, naming the ranks that did not ack."""
        if barrier.future.done():
            return
        missing = sorted(barrier.expected - barrier.acked)
        self.journal(Ev.BARRIER_TIMEOUT, version=barrier.version, missing=missing)
        self._answer(barrier, "timeout")

    def _answer(self, barrier: OpenBarrier, status: BarrierStatus) -> None:
        if self.open is barrier:
            self.open = None
        if barrier.future.done():
            return
        barrier.future.set_result(
            BarrierOutcome(
                version=barrier.version,
                status=status,
                acked_ranks=tuple(sorted(barrier.acked)),
                missing_ranks=tuple(sorted(barrier.expected - barrier.acked)),
                latency_s=time.monotonic() - barrier.started,
                expected=tuple(sorted(barrier.expected)),
                lost_ranks=tuple(sorted(barrier.lost)),
            )
        )
