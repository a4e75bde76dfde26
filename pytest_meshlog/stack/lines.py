"""The client's line store: what arrived per (rank, stream), and where printed output goes."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from . import wire

Sink = Callable[[int, bytes], None]
"""Where printed output goes: (target 0=stdout/1=stderr, bytes)."""


def stdio_sink(target: int, data: bytes) -> None:
    stream = sys.stdout if target == wire.STDOUT else sys.stderr
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        buffer.write(data)
    else:
        stream.write(data.decode("utf-8", "replace"))


class LineRecord:
    """The lines of one (rank, stream) as they arrived: blobs, split on first reading.

    The loop thread only appends; readers (any thread) split what is new since the last
    read. A million 41-byte lines cost about 45 MB here, not the 80 MB of line objects.
    """

    __slots__ = ("_blobs", "_lines", "_lock", "_split", "count")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blobs: list[bytes] = []
        self._lines: list[bytes] = []
        self._split = 0
        self.count = 0

    def add(self, count: int, blob: bytes) -> None:
        self._blobs.append(blob)
        self.count += count

    def lines(self) -> list[bytes]:
        with self._lock:
            end = len(self._blobs)
            for blob in self._blobs[self._split : end]:
                self._lines.extend(blob.split(b"\n"))
            self._split = end
            return list(self._lines)

    def blobs(self) -> list[bytes]:
        """The batches as they arrived, unsplit (each holds its lines joined by `\\n`): for
        a reader of every line that wants no object per line (the evidence)."""
        return list(self._blobs)
