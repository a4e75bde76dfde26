"""LocalLogSender: the bootstrap's end of one child stream's channel to the forwarder.

It posts without blocking while the channel is active, numbering each batch (`seq`: the
stream's index of its first line), and keeps every batch until the forwarder confirms it
has left for the client (`ACK`): a bounded window, which holds the tee when full (so the
child's pipe fills, as with any backpressure). Once the forwarder is gone (the child
crashed, or the channel closed early) the sender switches to its fallback: the
unconfirmed batches and every later one go to the driver over the host's own control
connection, and the client keeps each (rank, stream, seq) once. Without a fallback (a
sender made outside a host) sends are skipped and counted, as in the original design.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

from . import wire
from .blobs import Lines
from .channel import FrameConnection, dial
from .guards import guard_dialed
from .journal import Ev, Journal

WINDOW_HIGH_BYTES = 1024 * 1024
"""Unconfirmed bytes (line blobs) one stream may hold before its tee stops reading."""
WINDOW_LOW_BYTES = WINDOW_HIGH_BYTES // 2
"""... and reads again once confirmations bring it below this."""

Fallback = Callable[[wire.Message], bool]
"""Sends one control message to the driver over the host's own connection to it,
`("fallback", rank, log)` (a Log message this sender numbered); False if that connection
is gone."""


class LocalLogSender:
    """Dials the child's BOOTSTRAP_LOG_CHANNEL for one stream and watches its liveness."""

    def __init__(
        self,
        *,
        rank: int,
        stream: str,
        hostname: str,
        proc_id: str,
        journal: Journal,
        secret: bytes | None = None,
    ) -> None:
        self.rank = rank
        self.stream = stream
        self.target = wire.TARGETS.index(stream)
        self.hostname = hostname
        self.proc_id = proc_id
        self.journal = journal
        self.secret = secret  # shown in the HELLO: the forwarder admits only its mesh
        self.conn: FrameConnection | None = None
        self.on_sync: Callable[[int], None] | None = None
        self.skipped_lines = 0
        self.next_seq = 0  # the seq of the next batch: lines numbered so far
        self.window: collections.deque[tuple[wire.Message, int]] = collections.deque()
        """Sent, unconfirmed batches with their size in bytes, oldest first."""
        self.window_bytes = 0
        self.sent_batches = 0  # Log batches sent to the forwarder (what an ACK counts)
        self.confirmed = 0
        self.fallback: Fallback | None = None
        """Set by the host: the way to the driver once the forwarder is gone."""
        self.in_fallback = False
        self.fallback_batches = 0
        self.fallback_lines = 0
        self.on_window_full: Callable[[], None] | None = None
        self.on_window_ok: Callable[[], None] | None = None
        self._held = False

    async def connect(self, channel: str, deadline: float) -> bool:
        conn = FrameConnection(self._on_message, self._on_closed)
        guard_dialed(conn, f"sender_{self.stream}", self.journal, (wire.SYNC, wire.ACK))
        try:
            await dial(channel, conn, deadline, what=f"rank {self.rank} forwarder ({self.stream})")
        except (TimeoutError, OSError) as exc:
            self.journal(Ev.SENDER_FAILED, rank=self.rank, stream=self.stream, error=str(exc))
            return False
        self.conn = conn
        info: dict[str, Any] = {"stream": self.stream, "rank": self.rank}
        if self.secret is not None:
            info["secret"] = self.secret
        conn.send((wire.HELLO, "sender", info))
        self.journal(Ev.SENDER_CONNECTED, rank=self.rank, stream=self.stream)
        return True

    @property
    def active(self) -> bool:
        return self.conn is not None and self.conn.active

    def send(self, lines: Lines) -> bool:
        blob, n = lines
        msg = (wire.LOG, self.hostname, self.proc_id, self.target, n, blob, self.next_seq)
        self.next_seq += n
        if not self.in_fallback:
            if self.conn is not None and self.conn.send(msg, defer=True):
                self.sent_batches += 1
                self.window.append((msg, len(blob)))
                self.window_bytes += len(blob)
                if self.window_bytes > WINDOW_HIGH_BYTES and not self._held:
                    self._held = True
                    if self.on_window_full is not None:
                        self.on_window_full()
                return True
            self.start_fallback()
        if self.in_fallback and self._hand_over(msg):
            return True
        if not self.skipped_lines:
            self.journal(Ev.SEND_SKIPPED, rank=self.rank, stream=self.stream, lines=n, what="log")
        self.skipped_lines += n
        return False

    # -- the window and the fallback ----------------------------------------------------------

    def _confirm(self, batches: int) -> None:
        """ACK: the forwarder passed the first `batches` batches on; forget them."""
        if batches > self.sent_batches:
            raise wire.FrameError(f"Ack of {batches} batches, but {self.sent_batches} were sent")
        window = self.window
        while self.confirmed < batches and window:
            self.window_bytes -= window.popleft()[1]
            self.confirmed += 1
        self.confirmed = max(self.confirmed, batches)
        if self._held and self.window_bytes <= WINDOW_LOW_BYTES:
            self._release()

    def _release(self) -> None:
        self._held = False
        if self.on_window_ok is not None:
            self.on_window_ok()

    def start_fallback(self) -> None:
        """The forwarder is gone (or the channel closed): hand the driver every batch it did
        not confirm, and from now on every new one, over the host's control connection."""
        if self.in_fallback or self.fallback is None:
            return
        self.in_fallback = True
        window, self.window = self.window, collections.deque()
        self.window_bytes = 0
        for msg, _ in window:
            self._hand_over(msg)
        if self._held:
            self._release()

    def _hand_over(self, msg: wire.Message) -> bool:
        if self.fallback is None or not self.fallback(("fallback", self.rank, msg)):
            return False
        self.fallback_batches += 1
        self.fallback_lines += msg[4]
        return True

    def flush(self, version: int | None = None) -> bool:
        if self.conn is not None and self.conn.send((wire.FLUSH, version)):
            return True
        self.journal(Ev.SEND_SKIPPED, rank=self.rank, stream=self.stream, lines=0, what="flush")
        return False

    def stop_child(self) -> bool:
        return self.conn is not None and self.conn.send((wire.STOP,))

    def _on_message(self, conn: FrameConnection, msg: list[Any]) -> None:
        if msg[0] == wire.ACK:
            self._confirm(msg[1])
        elif msg[0] == wire.SYNC and self.on_sync is not None:
            self.on_sync(msg[1])

    def _on_closed(self, conn: FrameConnection, exc: BaseException | None) -> None:
        self.journal(Ev.SENDER_CLOSED, rank=self.rank, stream=self.stream)
        self.start_fallback()

    async def close(self, deadline: float) -> None:
        """At the host's stop (the child has exited): what the forwarder did not confirm
        goes by the fallback, ahead of the host's answer to `stop`."""
        if self.conn is not None and self.window:
            self.conn.read_rest()  # confirmations already sent by the dead child count
        self.start_fallback()
        if self.skipped_lines:
            self.journal(
                Ev.SEND_SKIPPED_TOTAL, rank=self.rank, stream=self.stream, lines=self.skipped_lines
            )
        if self.conn is not None:
            await self.conn.flush_out(min(deadline, time.monotonic() + 1.0))
            self.conn.close()
