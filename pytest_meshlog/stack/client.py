"""LogClientActor: the one client in the driver that every forwarder sends to.

It records what arrives (`lines`), prints it at once or aggregated per window
(`aggregate_window`), and runs the versioned flush barriers (`barriers`): every barrier
caller gets an answer (SPEC 1.11). The `slow_client` fault is `slow_consumer`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from . import wire
from .aggregate_window import AggregateWindow
from .barriers import Barriers, OpenBarrier
from .channel import FrameConnection, serve
from .guards import guard_accepted
from .journal import Ev, Journal
from .lines import LineRecord, stdio_sink
from .lines import Sink as Sink
from .mesh_key import new_secret
from .slow_consumer import consume_slowly


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
        self.aggregates = AggregateWindow(self.sink, journal)
        self.barriers = Barriers(journal, before_complete=self.aggregates.print_pending)
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
                consume_slowly(conn, self.consume_delay)
        elif kind == wire.FLUSH:
            if msg[1] is not None:
                self.barriers.ack(conn.info["rank"], msg[1])
        elif kind == wire.HELLO:  # checked by the guard: role, fields and the mesh secret
            rank = msg[2]["rank"]
            old = self.forwarders.get(rank)
            if old is not None and old is not conn and (old.active or rank in self.said_bye):
                conn.refuse(f"rank {rank} is already connected")
                return
            conn.info = dict(msg[2])
            self.forwarders[rank] = conn
            self.journal(Ev.FORWARDER_CONNECTED, rank=rank)
            self.poke()
        elif kind == wire.BYE:
            rank = conn.info["rank"]
            self.said_bye.add(rank)
            self.journal(Ev.FORWARDER_BYE, rank=rank)
            self.barriers.said_bye(rank)
            self.poke()

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
        if self.aggregates.window is None:
            head = f"[{hostname} {proc_id}] ".encode()
            self.sink(target, head + blob.replace(b"\n", b"\n" + head) + b"\n")
        else:
            self.aggregates.add(target, blob)

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

    def _on_closed(self, conn: FrameConnection, exc: BaseException | None) -> None:
        rank = conn.info.get("rank")
        if rank is None:
            return
        if rank not in self.said_bye:
            self.lost.add(rank)
            self.journal(Ev.FORWARDER_LOST, rank=rank)
            self.barriers.lost_rank(rank)
        self.poke()

    def poke(self) -> None:
        """Wake `wait_until` callers: something they may wait for changed."""
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

    # -- aggregation and barriers -----------------------------------------------------------

    def set_aggregate(self, window: float | None) -> None:
        """SetAggregate: switching to None prints what is pending first."""
        self.aggregates.set(window)

    def print_aggregates(self) -> None:
        self.aggregates.print_pending()

    def start_sync_flush(self, expected: frozenset[int]) -> OpenBarrier:
        """StartSyncFlush: open barrier version+1; an open one is answered as superseded."""
        return self.barriers.start(expected)

    def cast_force_sync(self, barrier: OpenBarrier) -> None:
        """ForceSyncFlush to every expected rank's forwarder."""
        for rank in barrier.expected:
            conn = self.forwarders.get(rank)
            if conn is not None:
                conn.send((wire.FORCE_SYNC, barrier.version))

    def set_mode(self, stream_to_client: bool) -> None:
        for conn in self.forwarders.values():
            conn.send((wire.SET_MODE, stream_to_client))

    def close(self) -> None:
        self.aggregates.print_pending()
        if self._server is not None:
            self._server.close()
        for conn in self.forwarders.values():
            conn.close()
