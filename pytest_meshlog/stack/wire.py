"""Messages and their frames: a 4-byte big-endian length, then a msgpack array `[kind, ...]`.

msgpack keeps raw `bytes` as bytes, so a line with invalid UTF-8 or NUL crosses intact.
Messages stay plain tuples on the hot path; the constants below name their kinds. A batch
of lines travels as one blob (the lines joined by `\\n`, which no line contains), so no hop
pays per line: the client keeps blobs and splits them only when someone reads the lines.
"""

from __future__ import annotations

import struct
import threading
from typing import Any

import msgpack

from .config import MAX_LINE_SIZE

# Data plane (bootstrap -> forwarder -> client).
LOG = 0  # (LOG, hostname, proc_id, target, nlines, b"\\n".join(lines), seq)
"""`seq` is the stream's index of the batch's first line (0, then the previous batch's
seq + nlines): the client keeps each (rank, stream, seq) once and in order, whichever way
it came (the forwarder, or the host's fallback through the driver link)."""
FLUSH = 1  # (FLUSH, version | None): None = heartbeat / EOF marker, int = barrier marker or ack
# Control plane.
HELLO = 2  # (HELLO, role, info): first frame on every connection
SET_MODE = 3  # (SET_MODE, stream_to_client)
FORCE_SYNC = 4  # (FORCE_SYNC, version): client -> forwarder
SYNC = 5  # (SYNC, version): forwarder -> bootstrap sender: drain the pipe, then Flush(version)
STOP = 6  # (STOP,): bootstrap -> forwarder: quiesce the child
BYE = 7  # (BYE, info): forwarder -> client: tails relayed, the child is about to exit
ACK = 8  # (ACK, batches): forwarder -> bootstrap sender: that many of the sender's Log
# batches (counted from the first) have left the forwarder's process for the client

Message = tuple[Any, ...]
"""A message as sent (a decoded one is a list)."""

STDOUT, STDERR = 0, 1
TARGETS = ("stdout", "stderr")

MAX_FRAME = 64 * 1024 * 1024
"""The limit of a trusted connection (a host's control socketpair); the mesh's channels
use `max_log_frame` of their batch size, and `HELLO_MAX` until the peer has proved itself."""
HELLO_MAX = 4096
"""The largest frame an accepted connection may send before its HELLO is accepted."""
MAX_LINE_BYTES = MAX_LINE_SIZE + 64
"""The longest line a tee sends: 4096 bytes, the truncation suffix and the rank prefix."""
MAX_NAME = 256
"""The longest hostname or proc_id a Log frame may carry."""
SECRET_BYTES = 32
_LEN = struct.Struct(">I")


class FrameError(ValueError):
    """A peer sent bytes that are not a valid frame (or not a valid message)."""


def max_log_frame(batch_lines: int) -> int:
    """The largest legal frame on a channel whose batches hold at most `batch_lines` lines:
    one batch of lines of at most MAX_LINE_BYTES, plus the message's framing."""
    return batch_lines * (MAX_LINE_BYTES + 1) + 2 * MAX_NAME + 64


class _Packers(threading.local):
    """One msgpack Packer per thread: `packb` builds a new one per call, which was most
    of the cost of encoding a batch. A Packer is not thread-safe, hence one per thread."""

    def __init__(self) -> None:
        self.pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack


_PACKERS = _Packers()


def encode(msg: tuple[Any, ...]) -> bytes:
    body: bytes = _PACKERS.pack(msg)
    return _LEN.pack(len(body)) + body


class FrameDecoder:
    """Incremental decoder: feed bytes, get whole frame bodies (or decoded messages)."""

    __slots__ = ("_buf", "limit")

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.limit = limit
        """The largest frame body accepted; a larger one is refused at its header."""

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self._buf)

    def frames(self, data: bytes, first_only: bool = False) -> list[memoryview]:
        """The bodies of every frame completed by `data` (length prefix removed); with
        `first_only`, at most one, the rest stays buffered (the limit may change after it).

        A body is a view of the bytes received, not a copy (a relay passes it on, a decode
        copies what it keeps); only an incomplete frame's bytes are held between calls."""
        buf = self._buf
        if buf:
            buf += data
            if len(buf) >= 4:
                (size,) = _LEN.unpack_from(buf, 0)
                if size <= self.limit and len(buf) - 4 < size:
                    return []  # still incomplete: nothing to copy yet
            data = bytes(buf)
            buf.clear()
        elif type(data) is not bytes:
            data = bytes(data)
        view = memoryview(data)
        out: list[memoryview] = []
        pos = 0
        end = len(data)
        limit = self.limit
        while end - pos >= 4:
            (size,) = _LEN.unpack_from(data, pos)
            if size > limit:  # nothing of a refused frame is kept
                raise FrameError(f"frame of {size} bytes exceeds the {limit}-byte limit")
            if end - pos - 4 < size:
                break
            out.append(view[pos + 4 : pos + 4 + size])
            pos += 4 + size
            if first_only:
                break
        if pos < end:
            buf += view[pos:]
        return out

    def feed(self, data: bytes) -> list[Any]:
        return [decode(body) for body in self.frames(data)]


def decode(body: bytes | memoryview) -> Any:
    """One frame body to its message; FrameError when it is not a message array."""
    try:
        msg = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:
        raise FrameError(f"undecodable frame of {len(body)} bytes: {exc}") from None
    if not isinstance(msg, list) or not msg:
        raise FrameError(f"frame is not a message array: {msg!r:.80}")
    return msg


def _fail(what: str, msg: Any) -> FrameError:
    return FrameError(f"{what}: {msg!r:.120}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_log(msg: Any, max_lines: int) -> None:
    """A Log message as a tee makes it, or FrameError naming what is wrong: names no
    longer than MAX_NAME, a known target, 1..max_lines lines joined by `\\n`, each line
    within MAX_LINE_BYTES (checked on the blob's length, never line by line), a seq >= 0."""
    if not isinstance(msg, list) or len(msg) != 7 or msg[0] != LOG:
        raise _fail("Log message is not [0, hostname, proc_id, target, nlines, blob, seq]", msg)
    _, hostname, proc_id, target, nlines, blob, seq = msg
    if not isinstance(hostname, str) or not isinstance(proc_id, str):
        raise _fail("Log hostname/proc_id are not strings", msg[:3])
    if len(hostname) > MAX_NAME or len(proc_id) > MAX_NAME:
        raise FrameError(f"Log hostname/proc_id longer than {MAX_NAME} characters")
    if not _is_int(target) or target not in (STDOUT, STDERR):
        raise FrameError(f"Log target {target!r:.40} is not 0 (stdout) or 1 (stderr)")
    if not _is_int(nlines) or not 1 <= nlines <= max_lines:
        raise FrameError(f"Log line count {nlines!r:.40} is not in 1..{max_lines}")
    if not isinstance(blob, bytes):
        raise FrameError(f"Log lines are a {type(blob).__name__}, not bytes")
    held = blob.count(b"\n") + 1
    if held != nlines:
        raise FrameError(f"Log says {nlines} lines but its blob holds {held}")
    if len(blob) > nlines * (MAX_LINE_BYTES + 1):
        raise FrameError(f"Log blob of {len(blob)} bytes is too long for {nlines} lines")
    if not _version(seq):
        raise FrameError(f"Log seq {seq!r:.40} is not an int >= 0")


_HELLO_FIELDS: dict[str, dict[str, type]] = {
    "self": {},
    "sender": {"stream": str, "rank": int},
    "forwarder": {"rank": int, "hostname": str, "proc_id": str, "pid": int},
}


def check_hello(msg: Any, roles: tuple[str, ...]) -> dict[str, Any]:
    """A HELLO of one of `roles` with the fields its role needs; returns its info."""
    if not isinstance(msg, list) or len(msg) != 3 or msg[0] != HELLO:
        raise _fail("expected [2 (HELLO), role, info] as the first frame", msg)
    role, info = msg[1], msg[2]
    if role not in roles:
        raise _fail(f"HELLO role is not one of {roles}", role)
    if not isinstance(info, dict):
        raise _fail("HELLO info is not a map", info)
    for name, kind in _HELLO_FIELDS[role].items():
        value = info.get(name)
        ok = _version(value) if kind is int else isinstance(value, kind)
        if not ok:
            raise _fail(f"HELLO of a {role} has a bad {name!r}", value)
    if role == "sender" and info["stream"] not in TARGETS:
        raise _fail("HELLO of a sender names an unknown stream", info["stream"])
    return info


def _version(value: Any) -> bool:
    return _is_int(value) and value >= 0


_CONTROL: dict[int, tuple[str, Any]] = {
    FLUSH: ("Flush is not [1, None | version >= 0]", lambda m: m[1] is None or _version(m[1])),
    FORCE_SYNC: ("ForceSyncFlush is not [4, version >= 0]", lambda m: _version(m[1])),
    SYNC: ("Sync is not [5, version >= 0]", lambda m: _version(m[1])),
    SET_MODE: ("SetMode is not [3, bool]", lambda m: isinstance(m[1], bool)),
    BYE: ("Bye is not [7, info]", lambda m: isinstance(m[1], dict)),
    ACK: ("Ack is not [8, batches >= 0]", lambda m: _version(m[1])),
}


def check_control(msg: Any, kinds: tuple[int, ...]) -> None:
    """A control message (not Log, not HELLO) of one of `kinds`, well formed."""
    if not isinstance(msg, list) or not msg or type(msg[0]) is not int or msg[0] not in kinds:
        raise _fail(f"message kind is not one of {kinds}", msg)
    if msg[0] == STOP:
        if len(msg) != 1:
            raise _fail("Stop is not [6]", msg)
        return
    what, ok = _CONTROL[msg[0]]
    if len(msg) != 2 or not ok(msg):
        raise _fail(what, msg)


def is_log(body: bytes | memoryview) -> bool:
    """A LOG frame, told from its first two bytes (fixarray header, then kind 0): a relay
    then checks it with `check_log` and passes the body on unchanged."""
    return len(body) > 1 and 0x90 <= body[0] <= 0x9F and body[1] == LOG


def frame_header(body: bytes | memoryview) -> bytes:
    """The length prefix of a frame whose body is `body`."""
    return _LEN.pack(len(body))


def frame(body: bytes | memoryview) -> bytes:
    """A frame body back into a frame (for relaying it unchanged)."""
    return _LEN.pack(len(body)) + body
