"""The mesh secret and how a child gets it: never through argv or the environment, only
through a descriptor it reads once at start (`SECRET_FD_ENV`)."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from . import wire
from .inherited import inherited_socket
from .wire import FrameDecoder, FrameError

SECRET_FD_ENV = "MESHLOG_SECRET_FD"
"""Set by the bootstrap: a descriptor (one end of a socketpair) holding the mesh secret
and the channel's batch size. Only the descriptor's number is in the environment; the
child reads it once at start and closes it (a socket, unlike a pipe, cannot be reopened
through /proc/<pid>/fd by another process)."""


@dataclass(frozen=True)
class MeshKey:
    """What a child needs to take part in its mesh's channels."""

    secret: bytes
    batch_lines: int


def new_secret() -> bytes:
    import secrets

    return secrets.token_bytes(wire.SECRET_BYTES)


def hand_key(key: MeshKey) -> socket.socket:
    """The end a child inherits; the key is already in it, and the other end is closed."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        mine.sendall(wire.encode(("key", key.secret, key.batch_lines)))
    finally:
        mine.close()
    theirs.set_inheritable(True)
    return theirs


def take_key(environ: dict[str, str] | None = None) -> MeshKey | None:
    """In a child: read and close the key descriptor named by SECRET_FD_ENV (consumed)."""
    sock = inherited_socket(SECRET_FD_ENV, environ)
    if sock is None:
        return None
    if sock.family != socket.AF_UNIX:
        sock.detach()  # not ours: leave whatever that fd is alone
        return None
    try:
        sock.settimeout(5.0)
        data = b""
        while True:
            more = sock.recv(65536)
            if not more:
                break
            data += more
    except OSError:
        return None
    finally:
        sock.close()
    try:
        msgs = FrameDecoder(wire.HELLO_MAX).feed(data)
        _, secret, batch_lines = msgs[0]
    except (FrameError, ValueError, IndexError, TypeError):
        return None
    if not isinstance(secret, bytes) or not isinstance(batch_lines, int) or batch_lines < 1:
        return None
    return MeshKey(secret, batch_lines)
