"""FileAppender: per-host files of every child's lines, one writer task per stream.

Closing is a level-triggered stop (an Event plus an end-of-queue marker behind every
posted batch), and each writer drains its queue before it exits: a line posted before
close is a line in the file (SPEC 1.8 and 1.11).
"""

from __future__ import annotations

import asyncio
import os
import uuid

from .journal import Journal

STREAMS = ("stdout", "stderr")
_END = None


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
        self._queues: dict[str, asyncio.Queue[list[bytes] | None]] = {
            s: asyncio.Queue() for s in STREAMS
        }
        self._fds = {
            s: os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            for s, p in self.paths.items()
        }
        self._tasks = [asyncio.create_task(self._writer(s)) for s in STREAMS]
        journal("file_appender_created", dir=directory, files=sorted(self.paths.values()))

    def redirect(self, path: str) -> None:
        """Point both files at `path` (fault injection: /dev/full makes every write fail)."""
        fd = os.open(path, os.O_WRONLY)
        for own in self._fds.values():
            os.dup2(fd, own)
        os.close(fd)
        self.journal("file_appender_redirected", path=path)

    def post(self, stream: str, lines: list[bytes]) -> None:
        """Queue a batch for the stream's writer; never blocks the tee."""
        if self.stop.is_set():
            self.journal("file_post_after_close", stream=stream, lines=len(lines))
            return
        self._queues[stream].put_nowait(lines)

    async def _writer(self, stream: str) -> None:
        queue, fd = self._queues[stream], self._fds[stream]
        while True:
            batch = await queue.get()
            if batch is _END:
                break
            if self.write_delay:
                await asyncio.sleep(self.write_delay)
            data = b"\n".join(batch) + b"\n"
            try:
                while data:
                    data = data[os.write(fd, data) :]
                self.lines_written[stream] += len(batch)
            except OSError as exc:
                self.write_errors[stream] += len(batch)
                self.journal("file_write_error", stream=stream, lines=len(batch), error=str(exc))
        os.close(fd)

    async def close(self, timeout: float) -> None:
        """Stop the writers after everything already posted is written."""
        self.stop.set()  # level-triggered: posts from here on are refused
        for queue, task in zip(self._queues.values(), self._tasks, strict=False):
            if not task.done():  # always wake the writer, whoever set `stop` first
                queue.put_nowait(_END)  # behind every accepted batch (FIFO)
        _done, pending = await asyncio.wait(self._tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        self.journal(
            "file_appender_closed",
            lines_written=dict(self.lines_written),
            write_errors=dict(self.write_errors),
            timed_out=bool(pending),
        )
