"""Messages and their frames: a 4-byte big-endian length, then a msgpack array `[kind, ...]`.

msgpack keeps raw `bytes` as bytes, so a line with invalid UTF-8 or NUL crosses intact.
Messages stay plain tuples on the hot path; the constants below name their kinds.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

# Data plane (bootstrap -> forwarder -> client).
LOG = 0  # (LOG, hostname, proc_id, target, [line, ...])
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
    """Incremental decoder: feed bytes, get whole messages."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buf = self._buf
        buf += data
        out: list[Any] = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (size,) = _LEN.unpack_from(buf, pos)
            if size > MAX_FRAME:
                raise FrameError(f"frame of {size} bytes exceeds the {MAX_FRAME}-byte limit")
            if end - pos - 4 < size:
                break
            try:
                msg = msgpack.unpackb(memoryview(buf)[pos + 4 : pos + 4 + size], raw=False, strict_map_key=False)
            except Exception as exc:
                raise FrameError(f"undecodable frame of {size} bytes: {exc}") from None
            if not isinstance(msg, list) or not msg:
                raise FrameError(f"frame is not a message array: {msg!r:.80}")
            out.append(msg)
            pos += 4 + size
        if pos:
            del buf[:pos]
        return out
