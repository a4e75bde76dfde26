"""`Lines`: a long sequence of lines kept as one bytes object, for the evidence and the oracle.

A mesh that delivered millions of lines must not cost millions of bytes objects to check
(issue 11, finding 8): every line is stored in one blob, each followed by `\\n` (no line
holds a `\\n`: every source splits on it). The blob alone is the sequence; where each line
ends is worked out (numpy, in chunks) only when a line is asked for by index, which the
oracle does for the lines a diff needs, not for streams that agree.

`Lines` behaves as the tuple of its lines: indexing, slicing (a tuple), iteration, `in`,
equality and hash are the tuple's. Two `Lines` compare by their blobs, and the common
head and tail of two of them are found on the blobs, without a line object.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np
import numpy.typing as npt

_CHUNK = 1 << 20
"""Bytes compared (or scanned for line ends) at a time: a bounded temporary copy each."""


class Lines(Sequence[bytes]):
    """The lines of one stream, in order, stored as one `\\n`-terminated blob."""

    __slots__ = ("_blob", "_count", "_ends")

    def __init__(self, blob: bytes = b"", count: int | None = None) -> None:
        """`blob`: the lines, each followed by `\\n` (empty: no line). `count`, when the
        caller knows it, saves a scan; it must be the number of `\\n` in `blob`."""
        if blob and not blob.endswith(b"\n"):
            raise ValueError(f"a Lines blob must end with a newline, got ...{blob[-20:]!r}")
        self._blob = blob
        self._count = blob.count(b"\n") if count is None else count
        self._ends: npt.NDArray[np.int64] | None = None

    @classmethod
    def of(cls, lines: Iterable[bytes]) -> Lines:
        """From separate lines (none may hold a newline)."""
        if isinstance(lines, Lines):
            return lines
        items = list(lines)
        for i, line in enumerate(items):
            if b"\n" in line:
                raise ValueError(f"line {i} holds a newline: {line[:80]!r}")
        return cls(b"".join(x + b"\n" for x in items), len(items))

    @classmethod
    def joined(cls, blobs: Iterable[bytes], count: int | None = None) -> Lines:
        """From blobs that each hold one or more lines joined by `\\n` (no final `\\n`), as
        the stack's client keeps its batches."""
        parts = list(blobs)
        return cls(b"\n".join([*parts, b""]) if parts else b"", count)

    @property
    def blob(self) -> bytes:
        """Every line followed by `\\n`."""
        return self._blob

    # -- the tuple's behaviour -----------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[bytes, ...]: ...
    def __getitem__(self, index: int | slice) -> bytes | tuple[bytes, ...]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._count)
            if step != 1:
                return tuple(self[i] for i in range(start, stop, step))
            if start >= stop:
                return ()
            lo, hi = self._start(start), self._start(stop)
            return tuple(self._blob[lo : hi - 1].split(b"\n"))
        i = index.__index__()
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError(f"line index {index} out of range (0..{self._count - 1})")
        return self._blob[self._start(i) : self._start(i + 1) - 1]

    def __iter__(self) -> Iterator[bytes]:
        blob, pos, size = self._blob, 0, len(self._blob)
        while pos < size:
            end = blob.find(b"\n", min(pos + _CHUNK, size - 1))
            yield from blob[pos:end].split(b"\n")
            pos = end + 1

    def __reversed__(self) -> Iterator[bytes]:
        for i in range(self._count - 1, -1, -1):
            yield self[i]

    def __contains__(self, line: object) -> bool:
        if not isinstance(line, bytes | bytearray) or b"\n" in line:
            return False
        needle = bytes(line) + b"\n"
        pos = self._blob.find(needle)
        while pos > 0 and self._blob[pos - 1] != 0x0A:  # found inside a longer line
            pos = self._blob.find(needle, pos + 1)
        return pos >= 0

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Lines):
            return self._count == other._count and self._blob == other._blob
        if isinstance(other, tuple):
            return len(other) == self._count and all(
                a == b for a, b in zip(self, other, strict=True)
            )
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        same = self.__eq__(other)
        return same if same is NotImplemented else not same

    def __hash__(self) -> int:
        return hash(tuple(self))  # equal to its tuple, so hashed as its tuple

    def __add__(self, other: Any) -> tuple[bytes, ...]:
        if isinstance(other, Lines | tuple):
            return (*self, *other)
        return NotImplemented

    def __repr__(self) -> str:
        head = ", ".join(repr(x) for x in self[:3])
        more = f", ... {self._count - 3} more" if self._count > 3 else ""
        return f"Lines([{head}{more}])"

    # -- alignment on the blobs ----------------------------------------------------------

    def common_prefix(self, other: Lines) -> int:
        """How many leading lines the two have in common."""
        agree = _common_head(self._blob, other._blob)
        return self._blob.count(b"\n", 0, agree)

    def common_suffix(self, other: Lines, limit: int) -> int:
        """How many trailing lines the two have in common, at most `limit`."""
        if limit <= 0:
            return 0
        a, b = self._blob, other._blob
        agree = _common_tail(a, b)
        start_a, start_b = len(a) - agree, len(b) - agree
        # whole lines inside the agreeing tail: those starting after its first byte ...
        n = a.count(b"\n", start_a, len(a) - 1) if agree else 0
        # ... and the one starting at it, when a line starts there in both
        if agree and _line_starts(a, start_a) and _line_starts(b, start_b):
            n += 1
        return min(n, limit)

    # -- where lines are -----------------------------------------------------------------

    def _start(self, i: int) -> int:
        """Where line `i` starts in the blob (`i == len`: the blob's end)."""
        if i == 0:
            return 0
        return int(self._line_ends()[i - 1]) + 1

    def _line_ends(self) -> npt.NDArray[np.int64]:
        if self._ends is None:
            view = np.frombuffer(self._blob, dtype=np.uint8)
            parts = [
                np.flatnonzero(view[at : at + 16 * _CHUNK] == 0x0A) + at
                for at in range(0, len(self._blob), 16 * _CHUNK)
            ]
            self._ends = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
        return self._ends


def as_lines(lines: Sequence[bytes]) -> Lines:
    """`lines` as `Lines` (itself when it already is)."""
    return lines if isinstance(lines, Lines) else Lines.of(lines)


def _line_starts(blob: bytes, at: int) -> bool:
    return at == 0 or blob[at - 1] == 0x0A


def _common_head(a: bytes, b: bytes) -> int:
    """Length of the common prefix of two byte strings, compared a chunk at a time."""
    n = min(len(a), len(b))
    at = 0
    while at < n:
        end = min(at + _CHUNK, n)
        if a[at:end] != b[at:end]:
            lo, hi = at, end  # a[:lo] == b[:lo]; they differ in [lo, hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if a[lo:mid] == b[lo:mid]:
                    lo = mid
                else:
                    hi = mid
            return lo
        at = end
    return n


def _common_tail(a: bytes, b: bytes) -> int:
    """Length of the common suffix of two byte strings, compared a chunk at a time."""
    na, nb = len(a), len(b)
    n = min(na, nb)
    done = 0  # the last `done` bytes agree
    while done < n:
        step = min(_CHUNK, n - done)
        if a[na - done - step : na - done] != b[nb - done - step : nb - done]:
            lo, hi = done, done + step  # the last lo agree; the last hi do not
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if a[na - mid : na - lo] == b[nb - mid : nb - lo]:
                    lo = mid
                else:
                    hi = mid
            return lo
        done += step
    return n
