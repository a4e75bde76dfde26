"""The checks every connection gets (the channel is private): a peer of another uid is
refused, the first frame must be a HELLO carrying the mesh secret, frames are small until
then, and every later message is checked before it is acted on. A bad frame or a handler
that fails on one closes only that connection, and is journaled."""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from typing import Any

from . import wire
from .channel import HELLO_TIMEOUT_S, FrameConnection, PeerCred
from .journal import Ev
from .wire import FrameError


class _AcceptGuard:
    """The checks of one accepted connection; its methods are the connection's hooks."""

    def __init__(
        self,
        conn: FrameConnection,
        where: str,
        journal: Callable[..., None],
        secret: bytes | None,
        roles: tuple[str, ...],
        kinds: tuple[int, ...],
        max_lines: int | None,
        max_frame: int,
    ) -> None:
        self.conn = conn
        self.where = where
        self.journal = journal
        self.secret = secret
        self.roles = roles
        self.kinds = kinds
        self.max_lines = max_lines
        self.max_frame = max_frame
        self.uid = os.getuid()

    def _pid(self) -> int | None:
        return None if self.conn.peer is None else self.conn.peer.pid

    def same_user(self, c: FrameConnection, cred: PeerCred) -> bool:
        if cred.uid == self.uid:
            return True
        self.journal(
            Ev.CONNECTION_REFUSED, peer_uid=cred.uid, peer_pid=cred.pid, where=self.where,
            reason="another user",
        )  # fmt: skip
        return False

    def refused(self, c: FrameConnection, reason: str) -> None:
        uid = None if c.peer is None else c.peer.uid
        self.journal(
            Ev.CONNECTION_REFUSED, peer_uid=uid, peer_pid=self._pid(), where=self.where,
            reason=reason,
        )  # fmt: skip

    def hello(self, c: FrameConnection, msg: list[Any]) -> str | None:
        """None if the HELLO is one of `roles` and carries the secret; else why not."""
        info = wire.check_hello(msg, self.roles)
        given = info.pop("secret", None)
        if self.secret is not None:
            if not isinstance(given, bytes):
                return "HELLO without the mesh secret"
            if not hmac.compare_digest(given, self.secret):
                return "HELLO with a wrong mesh secret"
        c.max_frame = self.max_frame
        return None

    def message(self, c: FrameConnection, msg: list[Any]) -> None:
        if self.max_lines is not None and type(msg[0]) is int and msg[0] == wire.LOG:
            wire.check_log(msg, self.max_lines)
        else:
            wire.check_control(msg, self.kinds)

    def rejected(self, c: FrameConnection, exc: FrameError) -> None:
        self.journal(Ev.FRAME_REJECTED, where=self.where, error=str(exc), peer_pid=self._pid())

    def failed(self, c: FrameConnection, exc: BaseException) -> None:
        self.journal(Ev.MESSAGE_FAILED, where=self.where, error=repr(exc), peer_pid=self._pid())


def guard_accepted(
    conn: FrameConnection,
    where: str,
    journal: Callable[..., None],
    *,
    secret: bytes | None = None,
    roles: tuple[str, ...] = (),
    kinds: tuple[int, ...] = (),
    max_lines: int | None = None,
    max_frame: int = wire.MAX_FRAME,
) -> FrameConnection:
    """Lock down a connection a server accepted. A peer of another uid is refused at once
    (`connection_refused`). The first frame must be a HELLO of one of `roles`; with a
    `secret`, it must carry the mesh's secret or the connection is refused. Until then a
    frame may be at most `wire.HELLO_MAX` bytes, after it `max_frame`; later messages
    must be one of `kinds`, or a Log of at most `max_lines` lines if that is given. A bad frame
    closes the connection (`frame_rejected`), a handler that fails on it too
    (`message_failed`). Whatever happens, only that connection goes; the server keeps
    serving the others."""
    guard = _AcceptGuard(conn, where, journal, secret, roles, kinds, max_lines, max_frame)
    conn.accept_peer = guard.same_user
    conn.on_frame_error = guard.rejected
    conn.on_handler_error = guard.failed
    conn.on_refused = guard.refused
    conn.max_frame = min(max_frame, wire.HELLO_MAX) if roles else max_frame
    if roles:
        conn.gate = guard.hello
        conn.hello_timeout = HELLO_TIMEOUT_S
    if kinds or max_lines is not None:
        conn.validate = guard.message
    return conn


def guard_dialed(
    conn: FrameConnection, where: str, journal: Callable[..., None], kinds: tuple[int, ...]
) -> FrameConnection:
    """The same checks for a connection this process dialed: its peer may send only
    `kinds`, in small frames; anything else closes it and is journaled."""

    def control(c: FrameConnection, msg: list[Any]) -> None:
        wire.check_control(msg, kinds)

    def rejected(c: FrameConnection, exc: FrameError) -> None:
        journal(Ev.FRAME_REJECTED, where=where, error=str(exc), peer_pid=None)

    def failed(c: FrameConnection, exc: BaseException) -> None:
        journal(Ev.MESSAGE_FAILED, where=where, error=repr(exc), peer_pid=None)

    conn.validate = control
    conn.on_frame_error = rejected
    conn.on_handler_error = failed
    conn.max_frame = wire.HELLO_MAX
    return conn
