"""LocalLogSender: the bootstrap's end of one child stream's channel to the forwarder.

It posts without blocking only while the channel is active; once the forwarder is gone
(the child crashed or closed the channel) sends are skipped and counted. That is the one
documented way to lose data: a crashed child may miss its very last batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import wire
from .channel import FrameConnection, dial
from .guards import guard_dialed
from .journal import Ev, Journal


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

    async def connect(self, channel: str, deadline: float) -> bool:
        conn = FrameConnection(self._on_message, self._on_closed)
        guard_dialed(conn, f"sender_{self.stream}", self.journal, (wire.SYNC,))
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

    def send(self, lines: list[bytes]) -> bool:
        msg = (wire.LOG, self.hostname, self.proc_id, self.target, len(lines), b"\n".join(lines))
        if self.conn is not None and self.conn.send(msg, defer=True):
            return True
        if not self.skipped_lines:
            self.journal(
                Ev.SEND_SKIPPED, rank=self.rank, stream=self.stream, lines=len(lines), what="log"
            )
        self.skipped_lines += len(lines)
        return False

    def flush(self, version: int | None = None) -> bool:
        if self.conn is not None and self.conn.send((wire.FLUSH, version)):
            return True
        self.journal(Ev.SEND_SKIPPED, rank=self.rank, stream=self.stream, lines=0, what="flush")
        return False

    def stop_child(self) -> bool:
        return self.conn is not None and self.conn.send((wire.STOP,))

    def _on_message(self, conn: FrameConnection, msg: list[Any]) -> None:
        if msg[0] == wire.SYNC and self.on_sync is not None:
            self.on_sync(msg[1])

    def _on_closed(self, conn: FrameConnection, exc: BaseException | None) -> None:
        self.journal(Ev.SENDER_CLOSED, rank=self.rank, stream=self.stream)

    async def close(self, deadline: float) -> None:
        if self.skipped_lines:
            self.journal(
                Ev.SEND_SKIPPED_TOTAL, rank=self.rank, stream=self.stream, lines=self.skipped_lines
            )
        if self.conn is not None:
            await self.conn.flush_out(min(deadline, time.monotonic() + 1.0))
            self.conn.close()
