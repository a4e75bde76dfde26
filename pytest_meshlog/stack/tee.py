"""The tee and its controller, StreamFwder: one per child per stream, on the bootstrap.

The tee reads the child's pipe, writes each raw chunk to the bootstrap's own console,
frames lines, and posts bounded batches to the sender and the file appender. It is
driven by readiness callbacks, so `sync` and `abort` can drain what is readable *now*
(stop never races EOF), and a paused sender stops the reading (backpressure to the child).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import termios
from typing import TYPE_CHECKING

from .blobs import Cutter, Lines, RecentLines
from .framing import LineFramer
from .journal import Ev, Journal

if TYPE_CHECKING:
    from .file_appender import FileAppender
    from .sender import LocalLogSender

CHUNK = 65536
PEEK_LINES = 100
_READS_PER_WAKEUP = 4


class StreamFwder:
    """Controller for one tee: owns the pipe fd, the peek ring and a level-triggered stop."""

    def __init__(
        self,
        *,
        rank: int,
        stream: str,
        fd: int,
        console_fd: int,
        sender: LocalLogSender | None,
        files: FileAppender | None,
        prefix: bytes,
        batch_lines: int,
        journal: Journal,
    ) -> None:
        self.rank = rank
        self.stream = stream
        self.fd = fd
        self.console_fd = console_fd
        self.sender = sender
        self.files = files
        self.batch_lines = batch_lines
        self.journal = journal
        self.framer = LineFramer(prefix)
        self.recent = RecentLines(PEEK_LINES)
        self.cutter = Cutter(batch_lines)
        self.stop = asyncio.Event()
        self.done = asyncio.Event()
        self.bytes_read = 0
        self.console_written = 0
        """Bytes that reached the console: the console check judges these, not those read."""
        self.console_error: OSError | None = None
        self.error: BaseException | None = None
        self._loop = asyncio.get_running_loop()
        self._reading = False
        self._holds: set[str] = set()  # who holds the reading: "sender", "window", "files"
        os.set_blocking(fd, False)
        if sender is not None:
            sender.on_sync = self.sync
            sender.on_window_full = lambda: self._hold("window")
            sender.on_window_ok = lambda: self._release("window")
            if sender.conn is not None:
                sender.conn.on_pause = lambda: self._hold("sender")
                sender.conn.on_resume = lambda: self._release("sender")
        if files is not None:
            files.subscribe(stream, lambda: self._hold("files"), lambda: self._release("files"))

    def start(self) -> None:
        self._set_reading(True)

    def peek(self) -> list[bytes]:
        """The most recent lines, oldest first."""
        return self.recent.peek()

    # -- reading ----------------------------------------------------------------------------

    def _set_reading(self, on: bool) -> None:
        if self.done.is_set():
            on = False
        if on and not self._reading:
            self._loop.add_reader(self.fd, self._on_readable)
        elif not on and self._reading:
            self._loop.remove_reader(self.fd)
        self._reading = on

    def _hold(self, who: str) -> None:
        """Backpressure from `who` (the sender's connection or the file writer): stop
        reading the pipe, so the child blocks in write() instead of the host buffering."""
        self._holds.add(who)
        self._set_reading(False)

    def _release(self, who: str) -> None:
        self._holds.discard(who)
        self._set_reading(not self._holds and not self.stop.is_set())

    def _on_readable(self) -> None:
        for _ in range(_READS_PER_WAKEUP):
            if not self._read_once() or self._holds:
                return

    def _read_once(self, size: int = CHUNK) -> int:
        """Read one chunk and forward it; 0 when nothing is readable now (or at EOF)."""
        try:
            chunk = os.read(self.fd, size)
        except BlockingIOError:
            return 0
        except OSError as exc:
            self.error = exc
            self._eof()
            return 0
        if not chunk:
            self._eof()
            return 0
        self.bytes_read += len(chunk)
        self._console(chunk)
        blob = self.framer.feed_blob(chunk)
        if blob is not None:
            self._forward(self.cutter.cut(blob))
        return len(chunk)

    def drain(self) -> int:
        """Forward what is in the pipe right now (not what a busy writer adds meanwhile)."""
        before = self.bytes_read
        if self.done.is_set():
            return 0
        try:
            budget = struct.unpack("i", fcntl.ioctl(self.fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        except OSError:
            budget = 0
        while budget > 0 and not self.done.is_set():
            n = self._read_once(min(CHUNK, budget))
            if not n:
                break
            budget -= n
        return self.bytes_read - before

    def _console(self, chunk: bytes) -> None:
        try:
            while chunk:
                n = os.write(self.console_fd, chunk)
                self.console_written += n
                chunk = chunk[n:]
        except BlockingIOError:
            pass  # a console that cannot keep up loses console bytes, never log lines
        except OSError as exc:
            self.error = self.console_error = exc

    def _forward(self, batches: list[Lines]) -> None:
        for batch in batches:
            self.recent.add(batch)
            if self.sender is not None:
                self.sender.send(batch)
            if self.files is not None:
                self.files.post(self.stream, batch)

    def _eof(self) -> None:
        """The pipe is done: forward the final partial line, post Flush(None) exactly once."""
        if self.done.is_set():
            return
        self._set_reading(False)
        self.done.set()
        tail = self.framer.take_partial()
        if tail is not None:
            self._forward([Lines(tail, 1)])
            self.journal(Ev.PARTIAL_FORWARDED, rank=self.rank, stream=self.stream, nbytes=len(tail))
        self.journal_counts()
        if self.sender is not None:
            self.sender.flush(None)
            self.journal(Ev.FLUSH_NONE_POSTED, rank=self.rank, stream=self.stream)
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def journal_counts(self) -> None:
        """At EOF: the bytes read from the pipe, and those that reached the console (with
        the error that stopped them, if one did: a failed console write was invisible)."""
        self.journal(Ev.EOF, rank=self.rank, stream=self.stream, bytes=self.bytes_read)
        failed = {} if self.console_error is None else {"error": str(self.console_error)}
        self.journal(
            Ev.CONSOLE_BYTES, rank=self.rank, stream=self.stream, bytes=self.console_written,
            **failed,
        )  # fmt: skip

    # -- barrier and stop -------------------------------------------------------------------

    def sync(self, version: int) -> None:
        """A barrier reached this stream: drain the pipe, then post Flush(version) behind it
        (also when held: a barrier covers what the child wrote before it began)."""
        self.drain()
        if self.sender is not None:
            self.sender.flush(version)

    async def abort(self) -> tuple[list[bytes], BaseException | None]:
        """Stop the tee after draining what is readable; returns (peek lines, error)."""
        self.stop.set()
        drained = self.drain()
        if not self.done.is_set():
            self._read_once()  # tells EOF (b"") apart from an open, empty pipe
        eof = self.done.is_set()
        if not eof:  # the pipe is still open (the child is wedged): this is the end anyway
            self._eof()
        lines = self.peek()
        self.journal(
            Ev.ABORT,
            rank=self.rank,
            stream=self.stream,
            peek=[ln.decode("utf-8", "replace") for ln in lines[-10:]],
            drained_bytes=drained,
            eof=eof,
        )
        return lines, self.error
