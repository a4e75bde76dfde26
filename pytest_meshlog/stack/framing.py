"""Turning a pipe's byte stream into log lines, as the tee does (SPEC 1.3).

Rules, in order, for each line (the bytes up to a `\\n`, or the final partial line):
a trailing `\\r` of a `\\r\\n` ending is dropped; bytes are decoded as UTF-8 with
replacement characters; a line over MAX_LINE_SIZE bytes is cut at the last character
boundary at or below it and suffixed TRUNCATED_SUFFIX; then the `[rank] ` prefix.
"""

from __future__ import annotations

from .config import MAX_LINE_SIZE

TRUNCATED_SUFFIX = "... [TRUNCATED]"

# A line's bytes past this point cannot change its truncated form: every raw byte decodes
# to at least one byte, and a UTF-8 character is at most four bytes long.
_KEEP = MAX_LINE_SIZE + 4


def finish_line(raw: bytes, prefix: bytes = b"", overflowed: bool = False) -> bytes:
    """Apply decoding, truncation and prefix to one line's raw bytes (no newline)."""
    if raw.isascii() and not overflowed and len(raw) <= MAX_LINE_SIZE:
        return prefix + raw
    text = raw.decode("utf-8", errors="replace").encode("utf-8")
    if overflowed or len(text) > MAX_LINE_SIZE:
        cut = MAX_LINE_SIZE
        while cut > 0 and (text[cut] & 0xC0) == 0x80:  # a continuation byte: not a boundary
            cut -= 1
        text = text[:cut] + TRUNCATED_SUFFIX.encode()
    return prefix + text


def _strip_cr(raw: bytes) -> bytes:
    """A `\\r\\n` ending loses its `\\r`."""
    return raw[:-1] if raw.endswith(b"\r") else raw


def _finish_blob(raw: bytes, prefix: bytes) -> bytes:
    """Finish the complete lines `raw` holds (newline-separated, none after the last),
    returned joined the same way.

    The rules are applied to all of them at once, in C, instead of line by line: a `\\r`
    before a newline goes in one replace, and decoding the lines together gives each what
    decoding it alone would (a newline is never part of a UTF-8 sequence and ends any
    unfinished one). Only a chunk with a line to truncate is finished line by line."""
    text = raw
    if b"\r" in text:
        text = (text + b"\n").replace(b"\r\n", b"\n")[:-1]
    if not text.isascii():
        try:
            text.decode("utf-8")  # valid UTF-8 decodes to itself: no need to re-encode it
        except UnicodeDecodeError:
            text = text.decode("utf-8", errors="replace").encode("utf-8")
    if _has_long_line(text, MAX_LINE_SIZE):
        return b"\n".join(finish_line(_strip_cr(line), prefix) for line in raw.split(b"\n"))
    return prefix + text.replace(b"\n", b"\n" + prefix) if prefix else text


def _has_long_line(text: bytes, limit: int) -> bool:
    """Whether a line of `text` is longer than `limit`: a window of `limit + 1` bytes with
    no newline in it. Each step jumps to the last newline of the next window, so a chunk
    of short lines takes about len/limit searches, not one per line."""
    pos, end = 0, len(text)
    while end - pos > limit:
        newline = text.rfind(b"\n", pos, pos + limit + 1)
        if newline < 0:
            return True
        pos = newline + 1
    return False


class LineFramer:
    """Incremental framer: feed chunks, get finished lines; memory bounded per line."""

    __slots__ = ("_buf", "_overflowed", "_prefix")

    def __init__(self, prefix: bytes = b"") -> None:
        if b"\n" in prefix:
            raise ValueError(f"a line prefix cannot hold a newline: {prefix!r}")
        self._prefix = prefix
        self._buf = b""
        self._overflowed = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """Frame a chunk; returns the lines it completed (possibly none)."""
        blob = self.feed_blob(chunk)
        return [] if blob is None else blob.split(b"\n")

    def feed_blob(self, chunk: bytes) -> bytes | None:
        """Frame a chunk; the lines it completed joined by `\\n` (none after the last),
        or None when it completed none."""
        end = chunk.rfind(b"\n")
        if end < 0:
            self._append(chunk)
            return None
        first: bytes | None = None
        start = 0
        if self._buf or self._overflowed:  # the chunk's first line ends the held partial one
            start = chunk.index(b"\n") + 1
            self._append(chunk[: start - 1])
            first = finish_line(_strip_cr(self._buf), self._prefix, self._overflowed)
            self._buf, self._overflowed = b"", False
        self._append(chunk[end + 1 :])
        if start > end:  # the held line was all the chunk completed
            return first
        rest = _finish_blob(chunk[start:end], self._prefix)
        return rest if first is None else first + b"\n" + rest

    def take_partial(self) -> bytes | None:
        """The final partial line (finished by the rules), or None; empties the buffer."""
        if not self._buf and not self._overflowed:
            return None
        line = finish_line(self._buf, self._prefix, self._overflowed)
        self._buf, self._overflowed = b"", False
        return line

    @property
    def pending(self) -> int:
        """Bytes held for the current partial line."""
        return len(self._buf)

    def _append(self, data: bytes) -> None:
        if not data:
            return
        room = _KEEP - len(self._buf)
        if len(data) > room:
            self._buf += data[: max(room, 0)]
            self._overflowed = True
        else:
            self._buf += data
