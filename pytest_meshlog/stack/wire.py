"""Messages and their frames: a 4-byte big-endian length, then a msgpack array `[kind, ...]`.

msgpack keeps raw `bytes` as bytes, so a line with invalid UTF-8 or NUL crosses intact.
Messages stay plain tuples on the hot path; the constants below name their kinds. A batch
of lines travels as one blob (the lines joined by `\\n`, which no line contains), so no hop
pays per line: the client keeps blobs and splits them only when someone reads the lines.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

# Data plane (bootstrap -> forwarder -> client).
LOG = 0  # (LOG, hostname, proc_id, target, nlines, b"\\n".join(lines))
FLUSH = 1  # (FLUSH, version | None): None = heartbeat / EOF marker, int = barrier marker or ack
# Control plane.
HELLO = 2  # (HELLO, role, info): first frame on every connection
SET_MODE = 3  # (SET_MODE, stream_to_client)
FORCE_SYNC = 4  # (FORCE_SYNC, version): client -> forwarder
SYNC = 5  # (SYNC, version): forwarder -> bootstrap sender: drain the pipe, then Flush(version)
STOP = 6  # (STOP,): bootstrap -> forwarder: quiesce the child
BYE = 7  # (BYE, info): forwarder -> client: tails relayed, the child is about to exit

STDOUT, STDERR = 0, 1
TARGETS = ("stdout", "stderr")

MAX_FRAME = 64 * 1024 * 1024
_LEN = struct.Struct(">I")


class FrameError(ValueError):
    """A peer sent bytes that are not a valid frame."""


def encode(msg: tuple[Any, ...]) -> bytes:
    body: bytes = msgpack.packb(msg, use_bin_type=True)
    return _LEN.pack(len(body)) + body


class FrameDecoder:
    """Incremental decoder: feed bytes, get whole frame bodies (or decoded messages)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def frames(self, data: bytes) -> list[bytes]:
        """The bodies of every frame completed by `data` (length prefix removed)."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (size,) = _LEN.unpack_from(buf, pos)
            if size > MAX_FRAME:
                raise FrameError(f"frame of {size} bytes exceeds the {MAX_FRAME}-byte limit")
            if end - pos - 4 < size:
                break
            out.append(bytes(buf[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        if pos:
            del buf[:pos]
        return out

    def feed(self, data: bytes) -> list[Any]:
        return [decode(body) for body in self.frames(data)]


def decode(body: bytes) -> Any:
    """One frame body to its message; FrameError when it is not a message array."""
    try:
        msg = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:
        raise FrameError(f"undecodable frame of {len(body)} bytes: {exc}") from None
    if not isinstance(msg, list) or not msg:
        raise FrameError(f"frame is not a message array: {msg!r:.80}")
    return msg


def is_log(body: bytes) -> bool:
    """A LOG frame, told from its first two bytes (fixarray header, then kind 0), so a
    relay can pass it on without decoding it."""
    return len(body) > 1 and 0x90 <= body[0] <= 0x9F and body[1] == LOG


def frame(body: bytes) -> bytes:
    """A frame body back into a frame (for relaying it unchanged)."""
    return _LEN.pack(len(body)) + body
