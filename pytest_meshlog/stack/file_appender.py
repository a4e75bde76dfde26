"""FileAppender: per-host files of every child's lines, one writer task per stream.

Closing is a level-triggered stop (an Event plus an end-of-queue marker behind every
posted batch), and each writer drains its queue before it exits: a line posted before
close is a line in the file (SPEC 1.8 and 1.11).

Each stream's queue is bounded: above `QUEUE_HIGH_BYTES` queued the appender *holds*
the tees that post to that stream (they stop reading their pipes, so a chatty child
blocks in write(), as on the client path), and lets them go below `QUEUE_LOW_BYTES`.
A slow disk therefore slows the children instead of growing the host. A writer still
busy at the close deadline is cancelled and named in the journal
(`file_writer_timed_out`): the lines it had not written are a slow disk's loss.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable

from .blobs import Lines
from .file_writer import FileWriterThread, WriteResult
from .journal import Ev, Journal

STREAMS = ("stdout", "stderr")
_END = None
QUEUE_HIGH_BYTES = 256 * 1024
"""Queued bytes of one stream above which the tees feeding it are held."""
QUEUE_LOW_BYTES = QUEUE_HIGH_BYTES // 2
"""...and at or below which they read again."""
WRITE_MOST_BATCHES = 64
"""Batches a writer takes from its queue for one write: a system call per batch was most
of a writer's cost, and each batch is still written whole, in order, and flushed."""


class FileAppender:
    """Owns two append-only files and their writer tasks."""

    def __init__(self, directory: str, basename: str, hosttag: str, journal: Journal) -> None:
        os.makedirs(directory, exist_ok=True)
        short = uuid.uuid4().hex[:8]
        self.paths = {
            s: os.path.join(directory, f"{basename}_{hosttag}_{short}.{s}") for s in STREAMS
        }
        self.journal = journal
        self.stop = asyncio.Event()
        self.lines_written = dict.fromkeys(STREAMS, 0)
        self.write_errors = dict.fromkeys(STREAMS, 0)
        self.write_delay = 0.0  # fault injection: a slow disk
        self.posted_lines = dict.fromkeys(STREAMS, 0)
        self.queued_bytes = dict.fromkeys(STREAMS, 0)
        self.peak_queued_bytes = dict.fromkeys(STREAMS, 0)
        self.holds = dict.fromkeys(STREAMS, 0)
        """How many times each stream's writer held its tees (a full queue)."""
        self.largest_post = dict.fromkeys(STREAMS, 0)
        self.most_posted_held = dict.fromkeys(STREAMS, 0)
        """The most bytes posted to a stream within one hold (see `bound`)."""
        self._posted_held = dict.fromkeys(STREAMS, 0)
        self.slowest_batch_s = dict.fromkeys(STREAMS, 0.0)
        self._held = dict.fromkeys(STREAMS, False)
        self._torn = dict.fromkeys(STREAMS, False)
        """A stream whose file ends in a torn line that could not be cut off (`_failed`)."""
        self._listeners: dict[str, list[tuple[Callable[[], None], Callable[[], None]]]] = {
            s: [] for s in STREAMS
        }
        self._queues: dict[str, asyncio.Queue[Lines | None]] = {s: asyncio.Queue() for s in STREAMS}
        self._fds = {
            s: os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            for s, p in self.paths.items()
        }
        self._threads = {
            s: FileWriterThread(fd, f"meshlog-file-{s}") for s, fd in self._fds.items()
        }
        self._tasks = [asyncio.create_task(self._writer(s)) for s in STREAMS]
        journal(Ev.FILE_APPENDER_CREATED, dir=directory, files=sorted(self.paths.values()))

    def redirect(self, path: str) -> None:
        """Point both files at `path` (fault injection: /dev/full makes every write fail)."""
        fd = os.open(path, os.O_WRONLY)
        for own in self._fds.values():
            os.dup2(fd, own, inheritable=False)
        os.close(fd)
        self.journal(Ev.FILE_APPENDER_REDIRECTED, path=path)

    # -- backpressure -----------------------------------------------------------------------

    def subscribe(self, stream: str, hold: Callable[[], None], release: Callable[[], None]) -> None:
        """A tee that posts to `stream`: `hold()` when its queue is full, `release()` when
        it has room again."""
        self._listeners[stream].append((hold, release))
        if self._held[stream]:
            hold()

    def bound(self, stream: str) -> int:
        """The most bytes the stream's queue may have held while backpressure worked: the
        high-water mark, plus the post that crossed it, plus the most posted within one
        hold (each tee's read in flight, and pipes drained for a barrier or at EOF)."""
        return QUEUE_HIGH_BYTES + self.largest_post[stream] + self.most_posted_held[stream]

    def _hold(self, stream: str) -> None:
        self._held[stream] = True
        self.holds[stream] += 1
        for hold, _release in self._listeners[stream]:
            hold()

    def _release(self, stream: str) -> None:
        self._held[stream] = False
        self._posted_held[stream] = 0
        for _hold, release in self._listeners[stream]:
            release()

    def post(self, stream: str, lines: Lines) -> None:
        """Queue a batch for the stream's writer; never blocks the tee (a full queue holds
        the tee's reading instead)."""
        if self.stop.is_set():
            self.journal(Ev.FILE_POST_AFTER_CLOSE, stream=stream, lines=lines.nlines)
            return
        self._queues[stream].put_nowait(lines)
        self.posted_lines[stream] += lines.nlines
        size = len(lines.blob) + 1
        if size > self.largest_post[stream]:
            self.largest_post[stream] = size
        if self._held[stream]:
            held = self._posted_held[stream] = self._posted_held[stream] + size
            if held > self.most_posted_held[stream]:
                self.most_posted_held[stream] = held
        queued = self.queued_bytes[stream] + size
        self.queued_bytes[stream] = queued
        if queued > self.peak_queued_bytes[stream]:
            self.peak_queued_bytes[stream] = queued
        if queued >= QUEUE_HIGH_BYTES and not self._held[stream]:
            self._hold(stream)

    # -- writing ----------------------------------------------------------------------------

    async def _writer(self, stream: str) -> None:
        queue = self._queues[stream]
        try:
            while True:
                batch = await queue.get()
                if batch is _END:
                    break
                batches = [batch]
                ended = False
                most = 1 if self.write_delay else WRITE_MOST_BATCHES  # a slow disk: per batch
                while not queue.empty() and len(batches) < most:
                    more = queue.get_nowait()
                    if more is _END:
                        ended = True
                        break
                    batches.append(more)
                await self._write(stream, batches)
                if ended:
                    break
        finally:  # after the last write; if one still blocks, once it returns
            self._threads[stream].close()

    async def _write(self, stream: str, batches: list[Lines]) -> None:
        """Write queued batches in one go, in the stream's writer thread: each line and
        its newline, unbuffered (nothing waits in this process once it returns)."""
        started = time.monotonic()
        if self.write_delay:
            await asyncio.sleep(self.write_delay)
        data = b"\n".join(b.blob for b in batches) + b"\n"
        size = len(data)
        lines = sum(b.nlines for b in batches)
        result = await self._threads[stream].write(data, self._torn[stream])
        if result.ended_torn:  # a torn line was still open: it is ended now
            self._torn[stream] = False
        if result.error is None:
            self.lines_written[stream] += lines
        else:
            self._failed(stream, data, lines, result)
        took = (time.monotonic() - started) / len(batches)
        if took > self.slowest_batch_s[stream]:
            self.slowest_batch_s[stream] = took
        self.queued_bytes[stream] -= size
        if self._held[stream] and self.queued_bytes[stream] <= QUEUE_LOW_BYTES:
            self._release(stream)

    def _failed(self, stream: str, data: bytes, lines: int, result: WriteResult) -> None:
        """A write failed after `result.done` bytes of `data` reached the file (a short
        write, then ENOSPC or EFBIG): the whole lines among them count as written and the
        rest as failed. The writer thread cut off the torn line after them, so that no
        later write (once space is freed) continues it into a corrupt line; a file that
        cannot be cut keeps it, and the next write ends it with a newline (`torn`)."""
        written = data.count(b"\n", 0, result.done - result.torn_bytes)
        torn_bytes, torn = result.torn_bytes, result.torn
        if torn == "kept":
            self._torn[stream] = True
        self.lines_written[stream] += written
        self.write_errors[stream] += lines - written
        self.journal(
            Ev.FILE_WRITE_ERROR,
            stream=stream,
            lines=lines - written,
            written_lines=written,
            torn_bytes=torn_bytes,
            torn=torn,
            error=str(result.error),
        )

    async def close(self, deadline: float) -> None:
        """Stop the writers after everything already posted is written; a writer still
        writing at the deadline (`time.monotonic()`) is cancelled and named
        (`file_writer_timed_out`)."""
        timeout = max(0.0, deadline - time.monotonic())
        self.stop.set()  # level-triggered: posts from here on are refused
        for queue, task in zip(self._queues.values(), self._tasks, strict=False):
            if not task.done():  # always wake the writer, whoever set `stop` first
                queue.put_nowait(_END)  # behind every accepted batch (FIFO)
        _done, pending = await asyncio.wait(self._tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        for stream, task in zip(STREAMS, self._tasks, strict=True):
            if task in pending:
                busy = self._threads[stream].busy_since
                self.journal(
                    Ev.FILE_WRITER_TIMED_OUT,
                    stream=stream,
                    path=self.paths[stream],
                    unwritten_lines=self._unwritten(stream),
                    lines_written=self.lines_written[stream],
                    timeout_s=round(timeout, 3),
                    slowest_batch_s=round(self.slowest_batch_s[stream], 6),
                    write_delay_s=self.write_delay,
                    blocked_s=None if busy is None else round(time.monotonic() - busy, 3),
                )
        for stream in STREAMS:  # nobody writes any more: let every held tee go
            if self._held[stream]:
                self._release(stream)
        self.journal(
            Ev.FILE_APPENDER_CLOSED,
            lines_written=dict(self.lines_written),
            write_errors=dict(self.write_errors),
            timed_out=bool(pending),
            peak_queued_bytes=dict(self.peak_queued_bytes),
            queue_bound_bytes={s: self.bound(s) for s in STREAMS},
            holds=dict(self.holds),
            deadline=deadline,
        )

    def _unwritten(self, stream: str) -> int:
        """Lines posted to `stream` that its cancelled writer never wrote (nor failed to)."""
        return self.posted_lines[stream] - self.lines_written[stream] - self.write_errors[stream]
