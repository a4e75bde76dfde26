"""LogClientActor: the one client in the driver that every forwarder sends to.

It records and prints what arrives (at once, or aggregated per window), and runs the
versioned flush barriers. Every barrier caller gets an answer: completed, superseded by a
newer barrier, or timed out naming the ranks that did not ack (SPEC 1.11).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import wire
from .aggregate import Aggregator
from .channel import FrameConnection, guard_accepted, new_secret, serve
from .journal import Ev, Journal
from .outcomes import BarrierOutcome, BarrierStatus

Sink = Callable[[int, bytes], None]
"""Where printed output goes: (target 0=stdout/1=stderr, bytes)."""


def stdio_sink(target: int, data: bytes) -> None:
    stream = sys.stdout if target == wire.STDOUT else sys.stderr
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        buffer.write(data)
    else:
        stream.write(data.decode("utf-8", "replace"))


class LineRecord:
    """The lines of one (rank, stream) as they arrived: blobs, split on first reading.

    The loop thread only appends; readers (any thread) split what is new since the last
    read. A million 41-byte lines cost about 45 MB here, not the 80 MB of line objects.
    """

    __slots__ = ("_blobs", "_lines", "_lock", "_split", "count")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blobs: list[bytes] = []
        self._lines: list[bytes] = []
        self._split = 0
        self.count = 0

    def add(self, count: int, blob: bytes) -> None:
        self._blobs.append(blob)
        self.count += count

    def lines(self) -> list[bytes]:
        with self._lock:
            end = len(self._blobs)
            for blob in self._blobs[self._split : end]:
                self._lines.extend(blob.split(b"\n"))
            self._split = end
            return list(self._lines)

    def blobs(self) -> list[bytes]:
        """The batches as they arrived, unsplit (each holds its lines joined by `\\n`): for
        a reader of every line that wants no object per line (the evidence)."""
        return list(self._blobs)


@dataclass
class _Barrier:
    version: int
    expected: frozenset[int]
    started: float
    future: asyncio.Future[BarrierOutcome]
    acked: set[int] = field(default_factory=set)
    lost: set[int] = field(default_factory=set)


class LogClientActor:
    """Serves the client address; all methods run on the driver's stack loop."""

    def __init__(
        self,
        address: str,
        journal: Journal,
        sink: Sink | None = None,
        consume_delay: float = 0.0,
        *,
        batch_lines: int = 100,
        secret: bytes | None = None,
    ) -> None:
        self.address = address
        self.batch_lines = batch_lines
        """The hosts' HYPERACTOR_READ_LOG_BUFFER: no legal frame holds more lines."""
        self.secret = secret if secret is not None else new_secret()
        """The mesh secret: a forwarder's HELLO must carry it (the bootstrap hands it to
        the children it starts, never through argv or the environment)."""
        self.consume_delay = consume_delay  # fault injection: a slow consumer
        self.journal = journal
        self.sink: Sink = sink or stdio_sink
        self.records: dict[tuple[int, str], LineRecord] = {}
        self.max_batch = 0
        self.forwarders: dict[int, FrameConnection] = {}
        self.said_bye: set[int] = set()
        self.lost: set[int] = set()
        self.version = 0
        self.window: float | None = None
        self.aggregators = (Aggregator(), Aggregator())
        self._barrier: _Barrier | None = None
        self._window_timer: asyncio.TimerHandle | None = None
        self._server: asyncio.AbstractServer | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self._server = await serve(self.address, lambda: self._accept())  # (patchable)

    def _accept(self) -> FrameConnection:
        return guard_accepted(
            FrameConnection(self._on_message, self._on_closed),
            "client",
            self.journal,
            secret=self.secret,
            roles=("forwarder",),
            kinds=(wire.FLUSH, wire.BYE),
            max_lines=self.batch_lines,
            max_frame=wire.max_log_frame(self.batch_lines),
        )

    # -- data -------------------------------------------------------------------------------

    def _on_message(self, conn: FrameConnection, msg: list[Any]) -> None:
        kind = msg[0]
        if kind == wire.LOG:
            self._on_log(conn.info["rank"], msg[1], msg[2], msg[3], msg[4], msg[5])
            if self.consume_delay:
                self._consume_slowly(conn)
        elif kind == wire.FLUSH:
            if msg[1] is not None:
                self._on_ack(conn.info["rank"], msg[1])
        elif kind == wire.HELLO:  # checked by the guard: role, fields and the mesh secret
            rank = msg[2]["rank"]
            old = self.forwarders.get(rank)
            if old is not None and old is not conn and (old.active or rank in self.said_bye):
                conn.refuse(f"rank {rank} is already connected")
                return
            conn.info = dict(msg[2])
            self.forwarders[rank] = conn
            self.journal(Ev.FORWARDER_CONNECTED, rank=rank)
            self._poke()
        elif kind == wire.BYE:
            rank = conn.info["rank"]
            self.said_bye.add(rank)
            self.journal(Ev.FORWARDER_BYE, rank=rank)
            barrier = self._barrier
            if barrier is not None and rank in barrier.expected and rank not in barrier.acked:
                # Bye means every line of that child is relayed: as good as an ack.
                self._on_ack(rank, barrier.version, via="bye")
            self._poke()

    def _on_log(
        self, rank: int, hostname: str, proc_id: str, target: int, count: int, blob: bytes
    ) -> None:
        key = (rank, wire.TARGETS[target])
        record = self.records.get(key)
        if record is None:
            self.records[key] = record = LineRecord()
        record.add(count, blob)
        if count > self.max_batch:
            self.max_batch = count
        if self.window is None:
            head = f"[{hostname} {proc_id}] ".encode()
            self.sink(target, head + blob.replace(b"\n", b"\n" + head) + b"\n")
        else:
            lines = blob.split(b"\n")
            self.aggregators[target].add_many(ln.decode("utf-8", "replace") for ln in lines)
            if self._window_timer is None:
                loop = asyncio.get_running_loop()
                self._window_timer = loop.call_later(self.window, self.print_aggregates)

    @property
    def delivered(self) -> dict[tuple[int, str], list[bytes]]:
        """Every line received, per (rank, stream), in arrival order."""
        return {key: record.lines() for key, record in list(self.records.items())}

    @property
    def delivered_blobs(self) -> dict[tuple[int, str], list[bytes]]:
        """`delivered` unsplit: per (rank, stream), the batches in arrival order."""
        return {key: record.blobs() for key, record in list(self.records.items())}

    def delivered_count(self, rank: int, stream: str) -> int:
        record = self.records.get((rank, stream))
        return 0 if record is None else record.count

    def _consume_slowly(self, conn: FrameConnection) -> None:
        """The slow_client fault: each batch costs `consume_delay` of this forwarder's
        reading time (the loop itself stays free, so barriers and control go on)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        resume_at = max(conn.info.get("resume_at", now), now) + self.consume_delay
        conn.info["resume_at"] = resume_at
        conn.pause_reading()
        handle = conn.info.get("resume_handle")
        if handle is not None:
            handle.cancel()
        conn.info["resume_handle"] = loop.call_at(resume_at, conn.resume_reading)

    def _on_closed(self, conn: FrameConnection, exc: BaseException | None) -> None:
        rank = conn.info.get("rank")
        if rank is None:
            return
        if rank not in self.said_bye:
            self.lost.add(rank)
            self.journal(Ev.FORWARDER_LOST, rank=rank)
            barrier = self._barrier
            if barrier is not None and rank in barrier.expected and rank not in barrier.acked:
                # Its connection is read to the end: no ack can come any more. Stop waiting
                # for it (as for a dead child at barrier start); the outcome names it.
                barrier.expected = barrier.expected - {rank}
                barrier.lost.add(rank)
                self.journal(Ev.BARRIER_RANK_LOST, version=barrier.version, rank=rank)
                if len(barrier.acked) >= len(barrier.expected):
                    self._complete(barrier)
        self._poke()

    def _poke(self) -> None:
        self._changed.set()

    async def wait_until(self, predicate: Callable[[], bool], deadline: float) -> bool:
        """Wait (bounded) until `predicate()` holds after some connection event."""
        while not predicate():
            self._changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return predicate()
        return True

    # -- aggregation ------------------------------------------------------------------------

    def set_aggregate(self, window: float | None) -> None:
        """SetAggregate: switching to None prints what is pending first."""
        if window is None and self.window is not None:
            self.print_aggregates()
        self.window = window

    def print_aggregates(self) -> None:
        if self._window_timer is not None:
            self._window_timer.cancel()
            self._window_timer = None
        for target, agg in enumerate(self.aggregators):
            if agg:
                n = agg.line_count
                self.sink(target, agg.take().encode())
                self.journal(Ev.AGGREGATE_PRINTED, target=wire.TARGETS[target], lines=n)

    # -- barriers ---------------------------------------------------------------------------

    def start_sync_flush(self, expected: frozenset[int]) -> _Barrier:
        """StartSyncFlush: open barrier version+1; an open one is answered as superseded."""
        self.version += 1
        loop = asyncio.get_running_loop()
        old = self._barrier
        barrier = _Barrier(self.version, expected, time.monotonic(), loop.create_future())
        self._barrier = barrier
        if old is not None:
            self.journal(Ev.BARRIER_SUPERSEDED, version=old.version, by=barrier.version)
            self._answer(old, "superseded")
        self.journal(Ev.BARRIER_STARTED, version=barrier.version, expected=len(expected))
        if not expected:
            self._complete(barrier)
        return barrier

    def cast_force_sync(self, barrier: _Barrier) -> None:
        for rank in barrier.expected:
            conn = self.forwarders.get(rank)
            if conn is not None:
                conn.send((wire.FORCE_SYNC, barrier.version))

    def _on_ack(self, rank: int, version: int, via: str = "marker") -> None:
        barrier = self._barrier
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
            self._complete(barrier)

    def _complete(self, barrier: _Barrier) -> None:
        self.print_aggregates()
        latency = time.monotonic() - barrier.started
        self.journal(Ev.BARRIER_COMPLETED, version=barrier.version, latency_s=latency)
        self._answer(barrier, "completed")

    def expire(self, barrier: _Barrier) -> None:
        """The caller's deadline passed: answer it, naming the ranks that did not ack."""
        if barrier.future.done():
            return
        missing = sorted(barrier.expected - barrier.acked)
        self.journal(Ev.BARRIER_TIMEOUT, version=barrier.version, missing=missing)
        self._answer(barrier, "timeout")

    def _answer(self, barrier: _Barrier, status: BarrierStatus) -> None:
        if self._barrier is barrier:
            self._barrier = None
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

    def set_mode(self, stream_to_client: bool) -> None:
        for conn in self.forwarders.values():
            conn.send((wire.SET_MODE, stream_to_client))

    def close(self) -> None:
        self.print_aggregates()
        if self._server is not None:
            self._server.close()
        for conn in self.forwarders.values():
            conn.close()
