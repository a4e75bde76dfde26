"""Lines held as one blob (joined by `\\n`, none after the last) on the host's hot path.

A 64 KiB read of 41-byte lines is 1,600 lines; making an object of each (split, then
join again per batch) was most of the host's time. The tee keeps a read's lines as one
blob, cuts it into batches with a few C-level searches per batch, and splits lines out
only when someone asks for them (`RecentLines.peek`).
"""

from __future__ import annotations

import collections
from typing import NamedTuple


class Lines(NamedTuple):
    """`nlines` finished lines joined by `\\n` (a line holds no `\\n`, so `nlines` is one
    more than the blob's newlines)."""

    blob: bytes
    nlines: int

    def split(self) -> list[bytes]:
        return self.blob.split(b"\n")


def cut(lines: Lines, most: int) -> list[Lines]:
    """`lines` in batches of `most` lines (the last may hold fewer), in order."""
    blob, count = lines
    if count <= most:
        return [lines]
    out: list[Lines] = []
    pos = 0
    stride = len(blob) * most // count  # a guess at a batch's size, refined as we go
    while count > most:
        end = _nth_newline(blob, pos, most, pos + max(stride, 1))
        out.append(Lines(blob[pos:end], most))
        stride = end + 1 - pos
        pos = end + 1
        count -= most
    out.append(Lines(blob[pos:], count))
    return out


def _nth_newline(blob: bytes, pos: int, n: int, guess: int) -> int:
    """The index of the `n`th newline at or after `pos` (there are at least `n`): count
    the newlines before `guess`, then step from there to the right one."""
    have = blob.count(b"\n", pos, guess)
    if have >= n:  # the guess went past it: step back from the last one before `guess`
        end = guess
        for _ in range(have - n + 1):
            end = blob.rfind(b"\n", pos, end)
        return end
    end = guess - 1
    for _ in range(n - have):
        end = blob.find(b"\n", end + 1)
    return end


class RecentLines:
    """The most recent `size` lines (the peek ring), kept as the blobs they came in."""

    __slots__ = ("_blobs", "_held", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._blobs: collections.deque[Lines] = collections.deque()
        self._held = 0

    def add(self, lines: Lines) -> None:
        self._blobs.append(lines)
        self._held += lines.nlines
        blobs = self._blobs
        while blobs and self._held - blobs[0].nlines >= self.size:  # the rest hold enough
            self._held -= blobs.popleft().nlines

    def peek(self) -> list[bytes]:
        """The most recent lines, oldest first."""
        out: list[bytes] = []
        for lines in self._blobs:
            out += lines.split()
        return out[-self.size :] if self.size else []
