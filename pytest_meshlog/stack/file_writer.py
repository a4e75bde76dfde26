"""One file's writes, in a thread of their own.

A `write(2)` that blocks in the kernel (a disk that stalls, a hung network mount) blocks
this thread, never the host's event loop: the host still answers barriers and stop, and
the file writer can be given up at its deadline. The thread owns the descriptor and
closes it after its last write, also when the task awaiting that write was cancelled: a
descriptor closed under a blocked write could be reused for another file, and the write
would land there.

The thread starts on the first write, so it never exists while the host forks its
children (they are all forked before any tee reads a line).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class WriteResult:
    """What one write did: `done` bytes of the data reached the file before `error`."""

    done: int
    error: OSError | None
    torn_bytes: int
    """Bytes of a line cut short by the error."""
    torn: str
    """What became of them: "none", "removed" (cut off the file) or "kept" (it could
    not be cut; the next write ends the line first)."""
    ended_torn: bool
    """This write began by ending a torn line left by an earlier one."""


_Job = tuple[bytes, bool, Callable[[WriteResult], None]]


class FileWriterThread:
    """Writes whole batches to one descriptor, in order, in a daemon thread."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self.busy_since: float | None = None
        """`time.monotonic()` when the write in progress began (None: none is)."""
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def write(self, data: bytes, end_torn: bool) -> asyncio.Future[WriteResult]:
        """Queue `data` (first a newline, if `end_torn`); the future has the result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[WriteResult] = loop.create_future()

        def reply(result: WriteResult) -> None:
            def settle() -> None:
                if not future.done():  # cancelled at the close deadline: nobody waits
                    future.set_result(result)

            with contextlib.suppress(RuntimeError):  # the loop closed while it blocked
                loop.call_soon_threadsafe(settle)

        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        self._jobs.put((data, end_torn, reply))
        return future

    def close(self) -> None:
        """Close the descriptor after the writes already queued (now, if none ever was)."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            os.close(self.fd)
        else:
            self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            data, end_torn, reply = job
            self.busy_since = time.monotonic()
            result = _write(self.fd, data, end_torn)
            self.busy_since = None
            reply(result)
        os.close(self.fd)


def _write(fd: int, data: bytes, end_torn: bool) -> WriteResult:
    done, ended = 0, False
    try:
        if end_torn:
            os.write(fd, b"\n")
            ended = True
        view = memoryview(data)
        while done < len(data):
            done += os.write(fd, view[done:])
    except OSError as exc:
        torn_bytes = done - (data.rfind(b"\n", 0, done) + 1)
        torn = "none"
        if torn_bytes:
            try:
                os.ftruncate(fd, os.fstat(fd).st_size - torn_bytes)
                torn = "removed"
            except OSError:
                torn = "kept"
        return WriteResult(done, exc, torn_bytes, torn, ended)
    return WriteResult(done, None, 0, "none", ended)
