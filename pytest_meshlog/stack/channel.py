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
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import wire
from .inherited import inherited_socket

# the guards live in `guards`, the private directories in `private_dirs`; callers (the
# leak check among them) import them from here
from .private_dirs import PRIVATE_DIR_LOG_ENV as PRIVATE_DIR_LOG_ENV
from .private_dirs import PRIVATE_DIRS as PRIVATE_DIRS
from .private_dirs import PrivateDir as PrivateDir
from .private_dirs import private_dir as private_dir
from .waits import poll_until
from .wire import FrameDecoder, FrameError, decode, encode

OnMessage = Callable[["FrameConnection", list[Any]], None]
OnClosed = Callable[["FrameConnection", BaseException | None], None]
OnError = Callable[["FrameConnection", BaseException], None]

HELLO_TIMEOUT_S = 10.0
"""An accepted connection that has not proved itself (HELLO with the mesh secret) by then
is refused: an idle stranger holds no slot and no buffer for long."""
READ_REST_LIMIT = 64 * 1024 * 1024
"""At most this much is read from a connection by `read_rest` (a failed write, a stop)."""
RECV_BYTES = 256 * 1024
"""The most one receive takes from a socket."""


class _RecvBuffer(threading.local):
    """The buffer every connection of this thread's loop receives into. asyncio's own
    receive allocates 256 KiB per call (an mmap, a shrink and an munmap even for a
    10-byte control message); a buffered protocol receives into this instead, and what
    it received is copied out and handled before the next receive."""

    def __init__(self) -> None:
        self.view = memoryview(bytearray(RECV_BYTES))


_RECV = _RecvBuffer()


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


class FrameConnection(asyncio.BufferedProtocol):
    """One framed connection; `info` holds what the peer said in its HELLO.

    Nothing a peer sends can take more than its own connection down: a frame over the
    connection's limit is refused at its header, a message that fails `validate` (or
    whose handler fails) closes this connection only, and both are reported through
    `on_frame_error` / `on_handler_error`. A write that fails (the peer is gone) never
    discards what the peer sent before it went: that is read to the end first."""

    def __init__(
        self,
        on_message: OnMessage,
        on_closed: OnClosed | None = None,
        *,
        max_frame: int = wire.MAX_FRAME,
    ) -> None:
        self.on_message = on_message
        self.on_closed = on_closed
        self.on_raw: Callable[[FrameConnection, memoryview], bool] | None = None
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
        self.on_handler_error: OnError | None = None
        """A handler raised something other than FrameError: a bug, reported, not printed."""
        self.validate: Callable[[FrameConnection, list[Any]], None] | None = None
        """Checks each decoded message before its handler; raises FrameError to reject it."""
        self.gate: Callable[[FrameConnection, list[Any]], str | None] | None = None
        """Sees the first message alone: a reason refuses the connection, None admits it."""
        self.on_refused: Callable[[FrameConnection, str], None] | None = None
        self.hello_timeout: float | None = None
        self.peer: PeerCred | None = None
        self.refused = False
        self.handler_error: BaseException | None = None
        self.read_after_write_error = 0
        """Bytes read to the end after a failed write (finding: a write error discarded them)."""
        self._decoder = FrameDecoder(max_frame)
        self._outgoing: list[bytes | memoryview] | None = None  # waiting for this turn's end
        self.submitted = 0
        """Bytes of frames handed to this connection so far (see `left`)."""
        self._hello_timer: asyncio.TimerHandle | None = None

    @property
    def active(self) -> bool:
        """TxStatus::Active: connected and not closed (nor closing) by either side."""
        t = self.transport
        return t is not None and not self.closed.is_set() and not t.is_closing()

    @property
    def max_frame(self) -> int:
        return self._decoder.limit

    @max_frame.setter
    def max_frame(self, limit: int) -> None:
        self._decoder.limit = limit

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return self._decoder.buffered

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=256 * 1024)
        if self.accept_peer is not None:
            try:
                cred = peer_credentials(transport.get_extra_info("socket"))
            except OSError:
                cred = PeerCred(-1, -1, -1)  # unknown peer: refuse
            self.peer = cred
            if cred is not None and not self.accept_peer(self, cred):
                self.refused = True
                transport.abort()
                return
        if self.gate is not None and self.hello_timeout is not None:
            loop = asyncio.get_running_loop()
            self._hello_timer = loop.call_later(self.hello_timeout, self._hello_late)

    def _hello_late(self) -> None:
        if self.gate is not None and self.active:
            self.refuse(f"no HELLO with the mesh secret within {self.hello_timeout}s")

    def refuse(self, reason: str) -> None:
        """Drop this connection: it did not prove it belongs to the mesh."""
        if self.refused:
            return
        self.refused = True
        if self.on_refused is not None:
            self.on_refused(self, reason)
        if self.transport is not None:
            self.transport.abort()

    def get_buffer(self, sizehint: int) -> memoryview:
        return _RECV.view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_RECV.view[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        if self.refused or self.frame_error is not None or self.handler_error is not None:
            return  # this connection is being dropped: nothing more of it is handled
        try:
            handle, raw = self.on_message, self.on_raw
            if self.gate is not None:  # the HELLO alone, under its own small limit
                bodies = self._decoder.frames(data, first_only=True)
                if not bodies:
                    return
                msg = decode(bodies[0])
                reason = self.gate(self, msg)
                if reason is not None:
                    self.refuse(reason)
                    return
                self.gate = None
                if self._hello_timer is not None:
                    self._hello_timer.cancel()
                handle(self, msg)
                if self.refused:
                    return
                data = b""  # what followed it is buffered: decoded under the new limit
            bodies = self._decoder.frames(data)
            validate = self.validate
            for body in bodies:
                if raw is not None and raw(self, body):
                    continue
                msg = decode(body)
                if validate is not None:
                    validate(self, msg)
                handle(self, msg)
                if self.refused:
                    return
        except FrameError as exc:
            self.frame_error = exc
            if self.on_frame_error is not None:
                self.on_frame_error(self, exc)
            self.close()
        except Exception as exc:  # a bug of ours, triggered by this peer: only it goes
            self.handler_error = exc
            if self.on_handler_error is not None:
                self.on_handler_error(self, exc)
            self.close()

    def read_rest(self) -> None:
        """Handle what the peer sent and this side has not read yet, to the end (the peer
        has gone, or is about to: a non-blocking read stops when nothing is left), whether
        or not reading is paused."""
        self._read_rest()

    def _read_rest(self) -> None:
        """The transport gave up after a failed write (EPIPE: the peer has gone). Whatever
        the peer sent before it went is still in our socket's receive queue, unread:
        handle it now, to the end, before the connection counts as lost."""
        transport = self.transport
        sock = None if transport is None else transport.get_extra_info("socket")
        if sock is None:
            return
        try:
            fd = sock.fileno()
        except OSError:
            return
        while self.read_after_write_error < READ_REST_LIMIT and not (
            self.refused or self.frame_error or self.handler_error
        ):
            try:
                data = os.read(fd, 256 * 1024)
            except OSError:  # EAGAIN: all of it is read (the peer is gone); or truly broken
                return
            if not data:
                return
            self.read_after_write_error += len(data)
            self.data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        if exc is not None and not self.refused:
            self._read_rest()
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

    def send_frame(self, body: bytes | memoryview, *, defer: bool = False) -> bool:
        """Pass an already-encoded frame body on unchanged (copied once, into the write,
        with its length header beside it)."""
        if not self.active:
            return False
        self._write(defer, wire.frame_header(body), body)
        return True

    def send(self, msg: tuple[Any, ...], *, defer: bool = False) -> bool:
        """Queue a message; False (and nothing sent) when the connection is not active.
        `defer`: bulk data, which may wait for the end of this loop turn to leave in one
        write with the rest; anything else leaves at once, behind what was deferred."""
        if not self.active:
            return False
        self._write(defer, encode(msg))
        return True

    @property
    def left(self) -> int:
        """Bytes of `submitted` that have left this process (written to the socket: the
        peer reads them even if this process dies now)."""
        t = self.transport
        if t is None:
            return 0
        queued = t.get_write_buffer_size()
        if self._outgoing:
            queued += sum(len(x) for x in self._outgoing)
        return self.submitted - queued

    def _write(self, defer: bool, *parts: bytes | memoryview) -> None:
        self.submitted += sum(map(len, parts))
        if defer:
            if self._outgoing is None:
                self._outgoing = list(parts)
                asyncio.get_running_loop().call_soon(self._write_out)
            else:
                self._outgoing += parts
        elif self._outgoing:
            self._outgoing += parts
            self._write_out()
        else:
            assert self.transport is not None
            self.transport.write(parts[0] if len(parts) == 1 else b"".join(parts))

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

        def drained_or_gone() -> bool:
            if not self.active or self.transport is None:
                return True
            return self._outgoing is None and self.transport.get_write_buffer_size() == 0

        if not await poll_until(drained_or_gone, deadline, most=0.005):
            return False
        return self.transport is not None and self.transport.get_write_buffer_size() == 0

    def close(self) -> None:
        self._write_out()  # what was sent before close goes first
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


BACKLOG = 1024
"""Connections a listening socket queues before its server accepts them."""

LISTEN_FD_ENV = "MESHLOG_CHANNEL_FD"
"""Set by the bootstrap: the child's channel socket, already bound and listening, so the
bootstrap's senders connect at once instead of retrying until the child serves it."""


def listen(path: str) -> socket.socket:
    """A Unix socket bound to `path` and listening (inheritable, for a child to serve)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def adopt_listener(path: str) -> socket.socket | None:
    """The listening socket on `path` this process inherited, if any. The variable is
    consumed, so a process this one starts never mistakes some other fd for it."""
    sock = inherited_socket(LISTEN_FD_ENV)
    if sock is None:
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
    if inherited is not None:  # asyncio listens again on it: with its own default of 100
        return await loop.create_unix_server(factory, sock=inherited, backlog=BACKLOG)
    return await loop.create_unix_server(factory, path=path, backlog=BACKLOG)


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
