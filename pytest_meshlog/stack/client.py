"""LogClientActor: the one client in the driver that every forwarder sends to.

It records what arrives (`lines`), prints it at once or aggregated per window
(`aggregate_window`), and runs the versioned flush barriers (`barriers`): every barrier
caller gets an answer (SPEC 1.11). The `slow_client` fault is `slow_consumer`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
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

_Batch = tuple[str, str, int, int, bytes]
"""A held batch: hostname, proc_id, target, line count, blob."""


SLOW_SINK_S = 0.05
"""A sink call slower than this (seconds) is counted: it held the stack's loop, and with
it every timer of the driver (`sink_slow`)."""


@dataclass
class _SinkTrouble:
    """One target's sink calls that failed, and those slower than `SLOW_SINK_S`."""

    failed: int = 0
    failed_bytes: int = 0
    error: str = ""
    """The first failure's."""
    slow: int = 0
    slow_s: float = 0.0
    slowest_s: float = 0.0


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
        self.sink_trouble: dict[int, _SinkTrouble] = {}
        self.records: dict[tuple[int, str], LineRecord] = {}
        self.max_batch = 0
        self.forwarders: dict[int, FrameConnection] = {}
        self.said_bye: set[int] = set()
        self.lost: set[int] = set()
        self._printing: list[tuple[int, list[bytes]]] = []
        """Output of lines kept this loop turn, per run of one stream, printed at its end."""
        self._heads: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        self.aggregates = AggregateWindow(self._print_now, journal)
        self.barriers = Barriers(journal, before_complete=self._before_barrier_completes)
        self._server: asyncio.AbstractServer | None = None
        self._changed = asyncio.Event()
        self._next_seq: dict[tuple[int, str], int] = {}
        """Per (rank, stream): the seq of the next batch to keep (every line before it is in)."""
        self._ahead: dict[tuple[int, str], dict[int, _Batch]] = {}
        """Fallback batches that arrived before earlier ones the forwarder still brings."""
        self.fallback_kept: dict[tuple[int, str], list[int]] = {}
        """Per (rank, stream): [lines, batches] kept from the hosts' fallback."""
        self.duplicates = 0  # batches dropped because their seq was already kept
        self.stream_to_client = True
        """The mode last set (`set_mode`): while off, the hosts' fallback delivers nothing
        either (the forwarders drop their batches by design)."""
        self.streaming_was_off = False
        """Streaming was off at some point: the forwarder dropped batches, so a seq that
        jumps ahead on its connection is no finding."""

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
            self._on_log(conn.info["rank"], msg[1], msg[2], msg[3], msg[4], msg[5], msg[6])
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
        self,
        rank: int,
        hostname: str,
        proc_id: str,
        target: int,
        count: int,
        blob: bytes,
        seq: int,
        fallback: bool = False,
    ) -> None:
        """Keep a batch once and in order per (rank, stream), whichever way it came."""
        key = (rank, wire.TARGETS[target])
        expected = self._next_seq.get(key, 0)
        if seq != expected:
            if seq < expected:  # the forwarder and the fallback both brought it
                self.duplicates += 1
                return
            if key in self._ahead or (fallback and self._forwarder_may_bring(rank)):
                self._ahead.setdefault(key, {})[seq] = (hostname, proc_id, target, count, blob)
                return  # earlier batches are still on their way from the forwarder
            if fallback or not self.streaming_was_off:
                self._gap(key, expected, seq, "fallback" if fallback else "forwarder")
        self._keep(key, hostname, proc_id, target, count, blob)
        self._next_seq[key] = seq + count
        if fallback:
            kept = self.fallback_kept.setdefault(key, [0, 0])
            kept[0] += count
            kept[1] += 1
        if key in self._ahead:
            self._release_ahead(key, final=False)

    def _forwarder_may_bring(self, rank: int) -> bool:
        """Whether the rank's forwarder may still bring earlier batches: its connection is
        open, or not read yet (a host's fallback can overtake a connection still in the
        listener's backlog). `_on_closed` and `settle` release what waits for it."""
        conn = self.forwarders.get(rank)
        return not conn.closed.is_set() if conn is not None else rank not in self.said_bye

    def _gap(self, key: tuple[int, str], expected: int, got: int, via: str) -> None:
        self.journal(Ev.SEQ_GAP, rank=key[0], stream=key[1], expected=expected, got=got, via=via)

    def _release_ahead(self, key: tuple[int, str], final: bool) -> None:
        """Keep the held batches that are next in order; with `final` (nothing more can
        come before them) all of them, each gap journaled."""
        ahead = self._ahead[key]
        while ahead:
            expected = self._next_seq.get(key, 0)
            for seq in [s for s in ahead if s < expected]:
                del ahead[seq]
                self.duplicates += 1
            if not ahead:
                break
            seq = expected if expected in ahead else min(ahead)
            if seq != expected:
                if not final:
                    break
                self._gap(key, expected, seq, "fallback")
            hostname, proc_id, target, count, blob = ahead.pop(seq)
            self._keep(key, hostname, proc_id, target, count, blob)
            self._next_seq[key] = seq + count
            kept = self.fallback_kept.setdefault(key, [0, 0])
            kept[0] += count
            kept[1] += 1
        if not ahead:
            del self._ahead[key]

    def on_fallback(self, ranks: frozenset[int], msg: list[Any]) -> None:
        """A batch a host delivers for a rank whose forwarder is gone (or whose channel
        closed early), over its own connection to the driver: checked like any Log."""
        try:
            if len(msg) != 3 or type(msg[1]) is not int or msg[1] not in ranks:
                raise wire.FrameError(
                    f"fallback for rank {msg[1:2]!r:.40}, not one of the host's ranks {sorted(ranks)}"
                )
            log = msg[2]
            wire.check_log(log, self.batch_lines)
        except wire.FrameError as exc:
            self.journal(Ev.FRAME_REJECTED, where="host_fallback", error=str(exc), peer_pid=None)
            return
        if not self.stream_to_client:
            return
        self._on_log(msg[1], log[1], log[2], log[3], log[4], log[5], log[6], fallback=True)
        self.poke()

    def read_unread(self) -> None:
        """Before the gaps are settled at stop: read what the forwarders sent that this
        client has not read yet. It is in this process's own socket buffers, acked by the
        forwarder once it left the child, so nobody else holds it: with reading paused
        (a slow consumer) at the stop deadline it was dropped at close, a block from the
        middle of a stream, while the host's fallback brought the lines after it."""
        for conn in list(self.forwarders.values()):
            if conn.transport is not None and not conn.refused:
                conn.read_rest()

    def settle(self) -> None:
        """Once the hosts answered stop: keep what is still held (each gap journaled), and
        journal per stream what the fallback delivered."""
        for key in list(self._ahead):
            self._release_ahead(key, final=True)
        for (rank, stream), (lines, batches) in sorted(self.fallback_kept.items()):
            self.journal(
                Ev.FALLBACK_DELIVERED, rank=rank, stream=stream, lines=lines, batches=batches
            )
        self.fallback_kept.clear()
        self._print_out()
        for target, t in sorted(self.sink_trouble.items()):
            if t.failed:
                self.journal(Ev.SINK_FAILED_TOTAL, target=target, writes=t.failed,
                             bytes=t.failed_bytes, error=t.error)  # fmt: skip
            if t.slow:
                self.journal(Ev.SINK_SLOW, target=target, calls=t.slow,
                             seconds=round(t.slow_s, 3), slowest_s=round(t.slowest_s, 3))  # fmt: skip

    def _keep(
        self,
        key: tuple[int, str],
        hostname: str,
        proc_id: str,
        target: int,
        count: int,
        blob: bytes,
    ) -> None:
        record = self.records.get(key)
        if record is None:
            self.records[key] = record = LineRecord()
        record.add(count, blob)
        if count > self.max_batch:
            self.max_batch = count
        if self.aggregates.window is None:
            head, newline_head = self._head(hostname, proc_id)
            self._print(target, (head, blob.replace(b"\n", newline_head), b"\n"))
        else:
            self.aggregates.add(target, blob)

    # -- printing ---------------------------------------------------------------------------

    def _head(self, hostname: str, proc_id: str) -> tuple[bytes, bytes]:
        """The `[hostname proc_id] ` each printed line starts with (and after a newline)."""
        key = (hostname, proc_id)
        heads = self._heads.get(key)
        if heads is None:
            if len(self._heads) >= 4096:  # names come from peers: bound what is remembered
                self._heads.clear()
            head = f"[{hostname} {proc_id}] ".encode()
            self._heads[key] = heads = (head, b"\n" + head)
        return heads

    def _print(self, target: int, parts: tuple[bytes, ...]) -> None:
        """Print at the end of this loop turn, with everything else kept in it: one sink
        write per turn and stream (joined once) instead of one per batch."""
        printing = self._printing
        if printing and printing[-1][0] == target:
            printing[-1][1].extend(parts)
            return
        if not printing:
            try:
                asyncio.get_running_loop().call_soon(self._print_out)
            except RuntimeError:  # off the loop (a unit test driving the client): at once
                self._write(target, b"".join(parts))
                return
        printing.append((target, list(parts)))

    def _print_out(self) -> None:
        """Print what waits, in order: each run of one stream in one write."""
        out, self._printing = self._printing, []
        for target, parts in out:
            self._write(target, b"".join(parts))

    def _print_now(self, target: int, data: bytes) -> None:
        """Print behind what waits (an aggregate block)."""
        self._print_out()
        self._write(target, data)

    def _write(self, target: int, data: bytes) -> None:
        """One sink write. A sink that raises (a closed stdout, a file past its size
        limit, a user's sink with a bug) loses that write, never the writes after it nor
        the connection it came from; the first failure per target is journaled at once,
        the totals when the mesh stops (`sink_failed`, `sink_failed_total`). The sink runs
        on this loop, so a slow one delays every deadline of the stack: a call slower
        than `SLOW_SINK_S` is counted, and journaled at stop (`sink_slow`)."""
        started = time.monotonic()
        try:
            self.sink(target, data)
            failed = None
        except BaseException as exc:  # SystemExit, pytest.fail(): nobody above to catch it
            failed = exc
        took = time.monotonic() - started
        if failed is None and took <= SLOW_SINK_S:
            return  # the usual call: no bookkeeping
        t = self.sink_trouble.setdefault(target, _SinkTrouble())
        if failed is not None:
            t.failed += 1
            t.failed_bytes += len(data)
            if t.failed == 1:
                t.error = f"{type(failed).__name__}: {failed}"
                self.journal(Ev.SINK_FAILED, target=target, bytes=len(data), error=t.error)
        if took > SLOW_SINK_S:
            t.slow += 1
            t.slow_s += took
            t.slowest_s = max(t.slowest_s, took)

    def _before_barrier_completes(self) -> None:
        """A barrier's caller may read the output as soon as it is answered: everything the
        barrier covers is printed first."""
        self._print_out()
        self.aggregates.print_pending()

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
        for key in [k for k in self._ahead if k[0] == rank]:  # its forwarder brings no more
            self._release_ahead(key, final=True)
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
        self.stream_to_client = stream_to_client
        if not stream_to_client:
            self.streaming_was_off = True
        for conn in self.forwarders.values():
            conn.send((wire.SET_MODE, stream_to_client))

    def close(self) -> None:
        self._print_out()
        self.aggregates.print_pending()
        if self._server is not None:
            self._server.close()
        for conn in self.forwarders.values():
            conn.close()
