"""Lines held as one blob (joined by `\\n`, none after the last) on the host's hot path.

A 64 KiB read of 41-byte lines is 1,600 lines; making an object of each (split, then
join again per batch) was most of the host's time. The tee keeps a read's lines as one
blob, cuts it into batches with a few C-level searches per batch (`Cutter`), and splits
lines out only when someone asks for them (`RecentLines.peek`).
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


class Cutter:
    """Cuts blobs into batches of `most` lines (the last may hold fewer), for one stream.

    Each batch costs a count of the newlines up to a guess of its end (the size of the
    stream's batch before it), and a step or two from there: a blob's newlines are counted
    once in all, and no line becomes an object."""

    __slots__ = ("most", "stride")

    def __init__(self, most: int) -> None:
        self.most = most
        self.stride = most * 80  # the guess before any batch was cut

    def cut(self, blob: bytes) -> list[Lines]:
        most = self.most
        out: list[Lines] = []
        pos, size = 0, len(blob)
        while True:
            guess = pos + self.stride
            have = blob.count(b"\n", pos, guess)
            if have < most:
                if guess >= size:  # the rest is the last batch
                    out.append(Lines(blob[pos:], have + 1))
                    return out
                end = guess - 1
                for found in range(most - have):
                    end = blob.find(b"\n", end + 1)
                    if end < 0:  # fewer than `most` lines are left
                        out.append(Lines(blob[pos:], have + found + 1))
                        return out
            else:  # the guess went past the batch's end: step back from the last newline
                end = guess
                for _ in range(have - most + 1):
                    end = blob.rfind(b"\n", pos, end)
            out.append(Lines(blob[pos:end], most))
            self.stride = end + 1 - pos
            pos = end + 1


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
