"""Deliberately broken variants of the reference stack, one bug each.

`pytest --meshlog --meshlog-selftest` runs the catalog against every variant and fails
unless each one is caught by at least one scenario: proof that the harness's checks can
fail. The first six are the weak points SPEC 1.11 names; the rest are the classic slips.
A variant is selected by name through MESHLOG_STACK_VARIANT, which every process of a
mesh inherits; each process patches its own half (host, child) when it starts, through
the stack's generic hook (`MESHLOG_STACK_PATCH=pytest_meshlog.selftest.variants:patch`,
see `stack.patches`: the stack never imports the self-test), and the driver half is
patched on one client instance only, so other tests are unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

from pytest_meshlog.evidence_model import Rules
from pytest_meshlog.markers import MeshOptions
from pytest_meshlog.stack.journal import Ev

Patch = Callable[[Any], None]

VARIANTS: dict[str, str] = {
    "no_quiesce": "the child exits at the end of its workload without waiting for its tails",
    "abort_drops_pipe": "stop aborts the tee at once, dropping bytes still in the pipe",
    "lost_wakeup": "file writers wait for a one-shot stop signal and miss it",
    "file_queue_dropped_on_close": "file writers quit on stop, dropping queued batches",
    "file_queue_unbounded": "the file queue never holds the tee: a slow disk grows the host",
    "second_barrier_orphans_first": "a new barrier replaces the open one without answering it",
    "barrier_never_ends": "a barrier past its deadline is never answered",
    "no_flush_none_at_eof": "the tee posts no Flush(None) at EOF",
    "flush_none_twice": "the tee posts Flush(None) twice at EOF",
    "partial_line_dropped": "the tee drops the final partial line at EOF",
    "truncation_off_by_one": "lines are cut at 4097 bytes instead of 4096",
    "prefix_on_wrong_stream": "the [rank] prefix goes on stderr only",
    "barrier_one_ack_early": "a barrier completes one ack before every rank acked",
    "file_writer_skips_final_flush": "file writers buffer and never flush their last block",
    "files_in_local_without_force": "Env::Local writes files without HYPERACTOR_FORCE_FILE_LOG",
    "write_error_discards_unread": "the client drops a connection whose write failed (the "
    "child is gone) without reading what it had sent: lines and Bye lost (issue 11, 1)",
    "forwarder_relays_undecoded": "the forwarder admits any same-user peer and relays what "
    "looks like a Log frame undecoded; a bad one closes its rank's connection (issue 11, 2)",
    "crash_loses_two_batches": "the host's fallback for a dead forwarder drops the last two "
    "batches of each stream: a crash loses up to two batches (issue 15)",
    "crash_loses_last_batch": "the host's fallback for a dead forwarder drops the last batch "
    "of each stream: a crash loses up to one batch, which only the strict level catches "
    "(issue 15)",
}
RULES: dict[str, Rules] = {"crash_loses_last_batch": "strict"}
"""The level the self-test judges a variant at, where it is not the default: a loss the
literal rule allows is caught only at the strict level."""


# -- host side ------------------------------------------------------------------------------


def _abort_drops_pipe() -> None:
    from pytest_meshlog.stack import bootstrap, tee

    async def abort(self: tee.StreamFwder) -> tuple[list[bytes], BaseException | None]:
        self.stop.set()
        eof = self.done.is_set()
        if not eof:  # breaks out at once: whatever is still in the pipe is dropped
            self._set_reading(False)
            self.done.set()
            if self.sender is not None:
                self.sender.flush(None)
                self.journal(Ev.FLUSH_NONE_POSTED, rank=self.rank, stream=self.stream)
            self.journal(Ev.EOF, rank=self.rank, stream=self.stream, bytes=self.bytes_read)
        self.journal(
            Ev.ABORT, rank=self.rank, stream=self.stream, peek=[], drained_bytes=0, eof=eof
        )
        return self.peek(), None

    tee.StreamFwder.abort = abort  # type: ignore[method-assign]
    original_stop = bootstrap.BootstrapProcManager.stop

    async def stop(self: bootstrap.BootstrapProcManager, timeout: float) -> dict[str, Any]:
        for child in self.children.values():  # STOP, then abort at once: races the EOF
            sender = child.senders.get("stdout")
            if sender is not None and not child.exited.is_set():
                sender.stop_child()
            for fwder in child.fwders.values():
                await fwder.abort()
        return await original_stop(self, timeout)

    bootstrap.BootstrapProcManager.stop = stop  # type: ignore[method-assign]


def _lost_wakeup() -> None:
    from pytest_meshlog.stack import file_appender as fa

    async def writer(self: fa.FileAppender, stream: str) -> None:
        queue, fd = self._queues[stream], self._fds[stream]
        while not self.stop.is_set():  # checks the signal only between batches
            batch = await queue.get()
            if batch is None:
                continue
            os.write(fd, batch.blob + b"\n")
            self.lines_written[stream] += batch.nlines
        os.close(fd)

    async def close(self: fa.FileAppender, deadline: float) -> None:
        self.stop.set()  # a one-shot notify: a writer parked in queue.get() never sees it
        _done, pending = await asyncio.wait(
            self._tasks, timeout=max(0.0, deadline - time.monotonic())
        )
        for task in pending:
            task.cancel()
        self.journal(Ev.FILE_APPENDER_CLOSED, lines_written=dict(self.lines_written),
                     write_errors=dict(self.write_errors), timed_out=bool(pending))  # fmt: skip

    fa.FileAppender._writer = writer  # type: ignore[method-assign]
    fa.FileAppender.close = close  # type: ignore[method-assign]


def _file_queue_dropped_on_close() -> None:
    from pytest_meshlog.stack import file_appender as fa

    async def writer(self: fa.FileAppender, stream: str) -> None:
        queue, fd = self._queues[stream], self._fds[stream]
        while True:
            batch = await queue.get()
            if batch is None or self.stop.is_set():  # quits on stop with batches queued
                break
            if self.write_delay:
                await asyncio.sleep(self.write_delay)
            os.write(fd, batch.blob + b"\n")
            self.lines_written[stream] += batch.nlines
        os.close(fd)

    fa.FileAppender._writer = writer  # type: ignore[method-assign]


def _file_queue_unbounded() -> None:
    from pytest_meshlog.stack import file_appender as fa

    def hold(self: fa.FileAppender, stream: str) -> None:
        self.holds[stream] += 1  # counted, but no tee is ever held: the queue just grows

    fa.FileAppender._hold = hold  # type: ignore[method-assign]


def _file_writer_skips_final_flush() -> None:
    import io

    from pytest_meshlog.stack import file_appender as fa

    async def writer(self: fa.FileAppender, stream: str) -> None:
        queue, fd = self._queues[stream], self._fds[stream]
        out = io.BufferedWriter(io.FileIO(fd, "w", closefd=False), buffer_size=1 << 20)
        while True:
            batch = await queue.get()
            if batch is None:
                break
            out.write(batch.blob + b"\n")
            self.lines_written[stream] += batch.nlines
        os.close(fd)  # the buffered block never reaches the file

    fa.FileAppender._writer = writer  # type: ignore[method-assign]


def _tee_eof(flush_times: int, forward_tail: bool) -> None:
    from pytest_meshlog.stack import tee
    from pytest_meshlog.stack.blobs import Lines

    def eof(self: tee.StreamFwder) -> None:
        if self.done.is_set():
            return
        self._set_reading(False)
        self.done.set()
        tail = self.framer.take_partial()
        if tail is not None and forward_tail:
            self._forward([Lines(tail, 1)])
            self.journal(Ev.PARTIAL_FORWARDED, rank=self.rank, stream=self.stream, nbytes=len(tail))
        self.journal_counts()
        for _ in range(flush_times):
            if self.sender is not None:
                self.sender.flush(None)
                self.journal(Ev.FLUSH_NONE_POSTED, rank=self.rank, stream=self.stream)
        os.close(self.fd)

    tee.StreamFwder._eof = eof  # type: ignore[method-assign]


def _truncation_off_by_one() -> None:
    from pytest_meshlog.stack import framing

    framing.MAX_LINE_SIZE = 4097  # type: ignore[attr-defined]
    framing._KEEP = 4097 + 4


def _prefix_on_wrong_stream() -> None:
    from pytest_meshlog.stack import tee

    original = tee.StreamFwder.__init__

    def init(self: tee.StreamFwder, **kwargs: Any) -> None:
        rank = kwargs["rank"]
        kwargs["prefix"] = f"[{rank}] ".encode() if kwargs["stream"] == "stderr" else b""
        original(self, **kwargs)

    tee.StreamFwder.__init__ = init  # type: ignore[method-assign]


def _files_in_local_without_force() -> None:
    from pytest_meshlog.stack import config

    original = config.StackConfig.file_log_gate

    def gate(self: config.StackConfig) -> str | None:
        return None if self.env == "local" else original(self)

    config.StackConfig.file_log_gate = gate  # type: ignore[method-assign]


# -- child side -----------------------------------------------------------------------------


def _no_quiesce() -> None:
    import sys

    from pytest_meshlog.stack import child

    def finish(self: child.ChildRuntime, code: int) -> Any:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        self._journal(Ev.CHILD_EXIT, code=code)
        os._exit(code)  # the forwarder dies with the process, tails or not

    child.ChildRuntime.finish = finish  # type: ignore[method-assign]


def _forwarder_relays_undecoded() -> None:
    from pytest_meshlog.stack import forwarder, wire
    from pytest_meshlog.stack.channel import FrameConnection

    def accept(self: forwarder.LogForwardActor) -> FrameConnection:
        conn = FrameConnection(self._on_channel_message, self._on_channel_closed)
        conn.on_raw = relay_raw.__get__(self)
        return conn  # no secret, no checks: any peer of this user is heard

    def relay_raw(self: forwarder.LogForwardActor, conn: FrameConnection, body: memoryview) -> bool:
        if not wire.is_log(body):
            return False
        if self.stream_to_client and self.client is not None:
            self.client.send_frame(body, defer=True)  # passed on as it came, never decoded
        self.relayed(conn)
        return True

    forwarder.LogForwardActor._accept = accept  # type: ignore[method-assign]


def _crash_loses_batches(batches: int) -> None:
    """The host's fallback (a dead forwarder's lines, see `stack.sender`) keeps back the
    last `batches` batches of each stream it carries: a crash loses up to that many
    batches of lines at the end of the stream (whole batches, at most `batches` x the
    batch size of lines)."""
    from pytest_meshlog.stack import sender, wire
    from pytest_meshlog.stack.config import StackConfig

    budget = batches * StackConfig.from_env().read_log_buffer
    held: dict[int, list[wire.Message]] = {}
    original_close = sender.LocalLogSender.close
    hand_over = sender.LocalLogSender._hand_over

    def keep(self: sender.LocalLogSender, msg: wire.Message) -> bool:
        held.setdefault(id(self), []).append(msg)
        return True

    async def close(self: sender.LocalLogSender, deadline: float) -> None:
        await original_close(self, deadline)
        mine = held.pop(id(self), [])
        left = budget
        while mine and mine[-1][4] <= left:  # the stream's last batches never go
            left -= mine.pop()[4]
        for msg in mine:
            hand_over(self, msg)

    sender.LocalLogSender._hand_over = keep  # type: ignore[method-assign]
    sender.LocalLogSender.close = close  # type: ignore[method-assign]


# -- driver side (one client instance) ------------------------------------------------------


def _write_error_discards_unread(mesh: Any) -> None:
    client = mesh.client
    original = client._accept

    def accept() -> Any:
        conn = original()
        conn._read_rest = lambda: None  # a failed write drops whatever is still unread
        return conn

    client._accept = accept


def _second_barrier_orphans_first(mesh: Any) -> None:
    barriers = mesh.client.barriers
    original = barriers.start

    def start(expected: frozenset[int]) -> Any:
        barriers.open = None  # forget the open one: its caller never hears back
        return original(expected)

    barriers.start = start


def _barrier_never_ends(mesh: Any) -> None:
    mesh.client.barriers.expire = lambda barrier: None


def _barrier_one_ack_early(mesh: Any) -> None:
    barriers = mesh.client.barriers
    original = barriers.ack

    def ack(rank: int, version: int, via: str = "marker") -> None:
        original(rank, version, via)
        barrier = barriers.open
        if (
            barrier is not None
            and barrier.version == version
            and len(barrier.acked) >= len(barrier.expected) - 1
        ):
            barriers.complete(barrier)

    barriers.ack = ack


_IN_PROCESS: dict[str, tuple[str, Callable[[], None]]] = {
    "no_quiesce": ("child", _no_quiesce),
    "abort_drops_pipe": ("host", _abort_drops_pipe),
    "lost_wakeup": ("host", _lost_wakeup),
    "file_queue_dropped_on_close": ("host", _file_queue_dropped_on_close),
    "file_queue_unbounded": ("host", _file_queue_unbounded),
    "no_flush_none_at_eof": ("host", lambda: _tee_eof(0, True)),
    "flush_none_twice": ("host", lambda: _tee_eof(2, True)),
    "partial_line_dropped": ("host", lambda: _tee_eof(1, False)),
    "truncation_off_by_one": ("host", _truncation_off_by_one),
    "prefix_on_wrong_stream": ("host", _prefix_on_wrong_stream),
    "file_writer_skips_final_flush": ("host", _file_writer_skips_final_flush),
    "files_in_local_without_force": ("host", _files_in_local_without_force),
    "forwarder_relays_undecoded": ("child", _forwarder_relays_undecoded),
    "crash_loses_two_batches": ("host", lambda: _crash_loses_batches(2)),
    "crash_loses_last_batch": ("host", lambda: _crash_loses_batches(1)),
}
_ON_DRIVER: dict[str, Patch] = {
    "second_barrier_orphans_first": _second_barrier_orphans_first,
    "barrier_never_ends": _barrier_never_ends,
    "barrier_one_ack_early": _barrier_one_ack_early,
    "write_error_discards_unread": _write_error_discards_unread,
}
assert set(_IN_PROCESS) | set(_ON_DRIVER) == set(VARIANTS)


def apply_in_process(variant: str, role: str) -> None:
    """Patch this host or child process's classes for `variant` (no-op for other roles)."""
    if variant not in VARIANTS:
        raise ValueError(f"MESHLOG_STACK_VARIANT={variant!r} is not a known variant")
    where = _IN_PROCESS.get(variant)
    if where is not None and where[0] == role:
        where[1]()


VARIANT_ENV = "MESHLOG_STACK_VARIANT"
PATCH = f"{__name__}:patch"
"""The value of `MESHLOG_STACK_PATCH` that applies the variant named in `VARIANT_ENV`."""


def patch(role: str) -> None:
    """The stack's patch hook (`stack.patches`): apply this process's half of the variant."""
    variant = os.environ.get(VARIANT_ENV)
    if variant:
        apply_in_process(variant, role)


def judged_at(options: MeshOptions, stack: str) -> MeshOptions:
    """The self-test's options for a mesh on `stack` (`reference+<variant>`): at the level
    the variant is judged at (`RULES`), else as given."""
    variant = stack.partition("+")[2]
    rules = RULES.get(variant)
    return options if rules is None else dataclasses.replace(options, rules=rules)


def apply_to_driver(variant: str, mesh: Any) -> None:
    """Patch one LoggingMeshClient instance (its LogClientActor) for `variant`."""
    patch = _ON_DRIVER.get(variant)
    if patch is not None:
        patch(mesh)
