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


class LineFramer:
    """Incremental framer: feed chunks, get finished lines; memory bounded per line."""

    __slots__ = ("_buf", "_overflowed", "_prefix")

    def __init__(self, prefix: bytes = b"") -> None:
        self._prefix = prefix
        self._buf = b""
        self._overflowed = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """Frame a chunk; returns the lines it completed (possibly none)."""
        if b"\n" not in chunk:
            self._append(chunk)
            return []
        parts = chunk.split(b"\n")
        last = parts.pop()
        prefix = self._prefix
        out: list[bytes] = []
        if self._buf or self._overflowed:  # the first part ends the held partial line
            self._append(parts[0])
            out.append(finish_line(_strip_cr(self._buf), prefix, self._overflowed))
            self._buf, self._overflowed = b"", False
            parts = parts[1:]
        if (
            chunk.isascii()
            and b"\r" not in chunk
            and max(map(len, parts), default=0) <= MAX_LINE_SIZE
        ):
            # The common case, decided at C speed for the whole chunk: no line needs
            # decoding, CR stripping or truncation.
            if prefix:
                parts = [prefix + raw for raw in parts]
            if out:
                out += parts
            else:
                out = parts
        else:
            out += [finish_line(_strip_cr(raw), prefix) for raw in parts]
        self._append(last)
        return out

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
