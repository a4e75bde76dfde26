"""What the stack must turn a child's raw bytes into: SPEC 1.3, written from the spec.

Deliberately shares no code with `pytest_meshlog.stack.framing` (an oracle that reused the
code it checks would agree with its bugs). Per line, in this order:

1. split on `\\n`; a complete line ending in `\\r` (a `\\r\\n` ending) loses that one `\\r`;
2. decode as UTF-8 with U+FFFD for invalid sequences;
3. if the decoded line is over 4096 bytes (UTF-8), cut it at the last character boundary
   at or below 4096 bytes and append `... [TRUNCATED]`;
4. prefix `[{rank}] ` when prefixing is on.

The final partial line (bytes after the last `\\n`, if any) is framed by the same rules,
except that a trailing `\\r` is kept: it did not end a `\\r\\n`.
"""

from __future__ import annotations

from collections.abc import Iterator

MAX_LINE_BYTES = 4096
"""SPEC 1.3 / section 2 `MAX_LINE_SIZE`; a test pins it to the stack's constant."""

TRUNCATED = b"... [TRUNCATED]"


def truncate(text: bytes) -> bytes:
    """Cut valid UTF-8 `text` to the last character boundary <= MAX_LINE_BYTES, if over."""
    if len(text) <= MAX_LINE_BYTES:
        return text
    end = MAX_LINE_BYTES
    # A boundary is where a character starts: any byte that is not 0b10xxxxxx.
    while end > 0 and 0x80 <= text[end] <= 0xBF:
        end -= 1
    return text[:end] + TRUNCATED


def frame_line(line: bytes, *, rank: int, prefix_with_rank: bool = True) -> bytes:
    """Decode, truncate and prefix one line's bytes (its `\\n` and `\\r\\n` already gone)."""
    text = truncate(line.decode("utf-8", errors="replace").encode("utf-8"))
    return (b"[%d] " % rank + text) if prefix_with_rank else text


def split_raw(raw: bytes) -> tuple[list[bytes], bytes | None]:
    """(complete lines without their endings, final partial line or None)."""
    pieces = raw.split(b"\n")
    tail = pieces.pop()
    lines = [p[:-1] if p.endswith(b"\r") else p for p in pieces]
    return lines, (tail or None)


def expected_lines(
    raw: bytes, *, rank: int, prefix_with_rank: bool = True, include_partial: bool = True
) -> list[bytes]:
    """Every line the stack should deliver for this stream's bytes, in order.

    The final partial line is included (last) when `include_partial` and there is one;
    see `final_partial` to get it alone.
    """
    lines, tail = split_raw(raw)
    out = [frame_line(line, rank=rank, prefix_with_rank=prefix_with_rank) for line in lines]
    if include_partial and tail is not None:
        out.append(frame_line(tail, rank=rank, prefix_with_rank=prefix_with_rank))
    return out


def final_partial(raw: bytes, *, rank: int, prefix_with_rank: bool = True) -> bytes | None:
    """The framed final partial line, or None when `raw` is empty or ends with `\\n`."""
    _, tail = split_raw(raw)
    if tail is None:
        return None
    return frame_line(tail, rank=rank, prefix_with_rank=prefix_with_rank)


_CHUNK = 1 << 20
"""Raw bytes framed at a time by `framed`: its temporary line objects stay this small."""


def framed(raw: bytes, *, rank: int, prefix_with_rank: bool = True) -> tuple[bytes, int]:
    """`expected_lines(raw, ...)` (the final partial line included) as one blob, every line
    followed by `\\n`, and how many lines that is: no object per line is kept, so a stream
    of millions of lines costs about its own size."""
    parts: list[bytes] = []
    count = 0
    for piece, n in _framed_pieces(raw, rank, prefix_with_rank):
        parts.append(piece)
        count += n
    return b"".join(parts), count


def _framed_pieces(raw: bytes, rank: int, prefix_with_rank: bool) -> Iterator[tuple[bytes, int]]:
    """(framed lines each followed by `\\n`, how many) for runs of about `_CHUNK` raw bytes."""
    prefix = b"[%d] " % rank if prefix_with_rank else b""
    pos, size = 0, len(raw)
    while pos < size:
        end = raw.find(b"\n", min(pos + _CHUNK, size))
        end = size if end < 0 else end + 1  # through a newline, or the final partial line
        chunk = raw[pos:end]
        pos = end
        lines = chunk.split(b"\n")
        if lines[-1] == b"":  # the chunk ends with a newline: no partial line here
            lines.pop()
        # The usual case, in C: ASCII has nothing to replace; with no \r and no long line,
        # framing a line is prefixing it.
        if chunk.isascii() and b"\r" not in chunk and max(map(len, lines)) <= MAX_LINE_BYTES:
            yield prefix + (b"\n" + prefix).join(lines) + b"\n", len(lines)
            continue
        done, tail = split_raw(chunk)
        if tail is not None:
            done.append(tail)  # keeps a trailing \r: it ended no \r\n
        out = [frame_line(line, rank=rank, prefix_with_rank=prefix_with_rank) for line in done]
        yield b"\n".join(out) + b"\n", len(out)
