"""Framed, flow-controlled connections over Unix sockets (asyncio protocols).

Every hop of the stack (sender -> forwarder -> client) is one of these. Writes never
block the loop; instead the transport's high-water mark pauses the producer upstream
(`on_pause`/`on_resume`), which is how backpressure reaches the child's pipe. Log batches
sent in one turn of the loop leave in one write, in order (a system call per frame was
most of a relay's cost); control messages leave at once, behind them.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .wire import FrameDecoder, FrameError, decode, encode, frame

OnMessage = Callable[["FrameConnection", list[Any]], None]
OnClosed = Callable[["FrameConnection", BaseException | None], None]


@dataclass(frozen=True)
class PeerCred:
    """SO_PEERCRED of a connected Unix socket: who was on the other end at connect()."""

    pid: int
    uid: int
    gid: int


def peer_credentials(sock: Any) -> PeerCred | None:
    """The peer's credentials, or None where the platform has no SO_PEERCRED."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCred(pid, uid, gid)


class FrameConnection(asyncio.Protocol):
    """One framed connection; `info` holds what the peer said in its HELLO."""

    def __init__(self, on_message: OnMessage, on_closed: OnClosed | None = None) -> None:
        self.on_message = on_message
        self.on_closed = on_closed
        self.on_raw: Callable[[FrameConnection, bytes], bool] | None = None
        """Sees each frame body first; True means handled (a relay passing frames on)."""
        self.on_pause: Callable[[], None] | None = None
        self.on_resume: Callable[[], None] | None = None
        self.info: dict[str, Any] = {}
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.frame_error: FrameError | None = None
        self.accept_peer: Callable[[FrameConnection, PeerCred], bool] | None = None
        """Asked once when an accepted connection is made; False closes it at once."""
        self.on_frame_error: Callable[[FrameConnection, FrameError], None] | None = None
        self.refused = False
        self._decoder = FrameDecoder()
        self._outgoing: list[bytes] | None = None  # frames waiting for the end of this turn

    @property
    def active(self) -> bool:
        """TxStatus::Active: connected and not closed by either side."""
        return self.transport is not None and not self.closed.is_set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=256 * 1024)
        if self.accept_peer is not None:
            try:
                cred = peer_credentials(transport.get_extra_info("socket"))
            except OSError:
                cred = PeerCred(-1, -1, -1)  # unknown peer: refuse
            if cred is not None and not self.accept_peer(self, cred):
                self.refused = True
                transport.abort()

    def data_received(self, data: bytes) -> None:
        try:
            bodies = self._decoder.frames(data)
            handle, raw = self.on_message, self.on_raw
            for body in bodies:
                if raw is not None and raw(self, body):
                    continue
                handle(self, decode(body))
        except FrameError as exc:
            self.frame_error = exc
            if self.on_frame_error is not None:
                self.on_frame_error(self, exc)
            self.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed.set()
        if not self.writable.is_set():  # a producer paused on us must not wait forever
            self.writable.set()
            if self.on_resume is not None:
                self.on_resume()
        if self.on_closed is not None:
            self.on_closed(self, exc)

    def pause_writing(self) -> None:
        self.writable.clear()
        if self.on_pause is not None:
            self.on_pause()

    def resume_writing(self) -> None:
        self.writable.set()
        if self.on_resume is not None:
            self.on_resume()

    def send_frame(self, body: bytes, *, defer: bool = False) -> bool:
        """Pass an already-encoded frame body on unchanged."""
        if not self.active:
            return False
        self._write(frame(body), defer)
        return True

    def send(self, msg: tuple[Any, ...], *, defer: bool = False) -> bool:
        """Queue a message; False (and nothing sent) when the connection is not active.
        `defer`: bulk data, which may wait for the end of this loop turn to leave in one
        write with the rest; anything else leaves at once, behind what was deferred."""
        if not self.active:
            return False
        self._write(encode(msg), defer)
        return True

    def _write(self, data: bytes, defer: bool) -> None:
        if defer:
            if self._outgoing is None:
                self._outgoing = [data]
                asyncio.get_running_loop().call_soon(self._write_out)
            else:
                self._outgoing.append(data)
        elif self._outgoing:
            self._outgoing.append(data)
            self._write_out()
        else:
            assert self.transport is not None
            self.transport.write(data)

    def _write_out(self) -> None:
        """Hand this turn's frames to the transport in one write."""
        out, self._outgoing = self._outgoing, None  # the scheduled call finds it empty
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def pause_reading(self) -> None:
        if self.active and self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.active and self.transport is not None:
            self.transport.resume_reading()

    async def drain(self) -> None:
        """Wait until the write buffer is below its high-water mark (or the peer is gone)."""
        await self.writable.wait()

    async def flush_out(self, deadline: float) -> bool:
        """Wait until everything written has left this process; False at the deadline."""
        while self.active and self.transport is not None:
            if self._outgoing is None and self.transport.get_write_buffer_size() == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.001)
        return self.transport is not None and self.transport.get_write_buffer_size() == 0

    def close(self) -> None:
        self._write_out()  # what was sent before close goes first
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


def guard_accepted(
    conn: FrameConnection, where: str, journal: Callable[..., None]
) -> FrameConnection:
    """Lock down a connection a server accepted: a peer of another uid is refused at once
    (`connection_refused`), a bad frame closes the connection (`frame_rejected`). Either
    way only that connection goes; the server keeps serving the others."""
    me = os.getuid()

    def check(c: FrameConnection, cred: PeerCred) -> bool:
        if cred.uid == me:
            return True
        journal("connection_refused", peer_uid=cred.uid, peer_pid=cred.pid, where=where)
        return False

    def rejected(c: FrameConnection, exc: FrameError) -> None:
        journal("frame_rejected", where=where, error=str(exc))

    conn.accept_peer = check
    conn.on_frame_error = rejected
    return conn


LISTEN_FD_ENV = "MESHLOG_CHANNEL_FD"
"""Set by the bootstrap: the child's channel socket, already bound and listening, so the
bootstrap's senders connect at once instead of retrying until the child serves it."""


def listen(path: str) -> socket.socket:
    """A Unix socket bound to `path` and listening (inheritable, for a child to serve)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def adopt_listener(path: str) -> socket.socket | None:
    """The listening socket on `path` this process inherited, if any. The variable is
    consumed, so a process this one starts never mistakes some other fd for it."""
    raw = os.environ.pop(LISTEN_FD_ENV, None)
    if raw is None or not raw.isdigit():
        return None
    try:
        sock = socket.socket(fileno=int(raw))
    except OSError:
        return None
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if sock.family == socket.AF_UNIX and listening and sock.getsockname() == path:
            sock.set_inheritable(False)
            return sock
    except OSError:
        pass
    sock.detach()  # not ours to close: whatever that fd is, leave it alone
    return None


async def serve(path: str, factory: Callable[[], FrameConnection]) -> asyncio.AbstractServer:
    """Serve a Unix socket path (the caller owns the directory and removes it), on the
    listening socket inherited for it if there is one."""
    loop = asyncio.get_running_loop()
    inherited = adopt_listener(path)
    if inherited is not None:
        return await loop.create_unix_server(factory, sock=inherited)
    return await loop.create_unix_server(factory, path=path, backlog=1024)


async def dial(
    path: str, conn: FrameConnection, deadline: float, *, what: str = "channel"
) -> FrameConnection:
    """Connect to `path`, retrying while the server is not up yet, until `deadline`."""
    loop = asyncio.get_running_loop()
    delay = 0.0005
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, path)
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN):
                raise
            if time.monotonic() + delay > deadline:
                raise TimeoutError(f"{what} at {path} did not accept a connection in time") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
            continue
        await loop.connect_accepted_socket(lambda: conn, sock)
        return conn


@dataclass(frozen=True)
class PrivateDir:
    """A directory `private_dir` made: where, by which process and which code."""

    path: str
    pid: int
    creator: str
    seq: int


_SEQ = itertools.count(1)
PRIVATE_DIRS: list[PrivateDir] = []
"""Every private directory this process made, oldest first (the leak check reads it)."""

PRIVATE_DIR_LOG_ENV = "MESHLOG_PRIVATE_DIR_LOG"
"""If set, a file where every process of the stack appends one JSON line per private
directory it makes, so directories made by hosts and children are attributable too."""


def private_dir(prefix: str = "ml-") -> str:
    """A 0700 directory with a short path (Unix socket paths are limited to ~107 bytes)."""
    import tempfile

    base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    path = tempfile.mkdtemp(prefix=prefix, dir=base)
    os.chmod(path, 0o700)
    caller = sys._getframe(1)
    code = caller.f_code
    name = getattr(code, "co_qualname", code.co_name)
    where = f"{name} ({os.path.basename(code.co_filename)}:{caller.f_lineno})"
    record = PrivateDir(path, os.getpid(), where, next(_SEQ))
    if len(PRIVATE_DIRS) >= 4096:  # a long-lived process: forget the ones already removed
        PRIVATE_DIRS[:] = [d for d in PRIVATE_DIRS if os.path.lexists(d.path)]
    PRIVATE_DIRS.append(record)
    log = os.environ.get(PRIVATE_DIR_LOG_ENV)
    if log:
        line = json.dumps({"path": path, "pid": record.pid, "creator": record.creator})
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError:
            return path
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
    return path
