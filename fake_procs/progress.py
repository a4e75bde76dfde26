"""What a child actually wrote to fd 1 and fd 2, from its script and its progress record.

The script says *which* bytes, in which order per stream and write path; the progress
record (format in executor.py) says *how many* of them were handed to each fd, and in
which order the two paths (direct `os.write` and Python's buffer) reached it. Replaying
the script for the rank and consuming bytes entry by entry gives exact per-stream bytes,
even after a crash mid-script or a SIGKILL mid-flood.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from .render import walk_writes
from .scripts import Script
from .steps import STREAMS, Stream

Path = Literal["d", "b"]
_STREAM: dict[str, Stream] = {"o": "stdout", "e": "stderr"}
_FINAL = ("end", "exit", "crash")


class ProgressError(ValueError):
    """The progress record does not fit the script (wrong rank, foreign writes, corrupt)."""


@dataclass(frozen=True)
class WriteEntry:
    """`nbytes` handed to `stream`'s fd via `path` (d: os.write, b: Python buffer) in `step`."""

    stream: Stream
    path: Path
    step: int
    nbytes: int


@dataclass(frozen=True)
class Progress:
    """A parsed progress record."""

    rank: int | None
    pid: int | None
    writes: tuple[WriteEntry, ...]
    events: tuple[str, ...] = ()
    last_event: str | None = None
    """The last non-write line (`end 0`, `crash 6 sigkill`, `stop 4`, ...), if any."""
    ends_with_write: bool = False

    @property
    def ending(self) -> str | None:
        """How the script itself ended: `end`, `exit`, `crash`, `stop` or None (killed/running)."""
        for event in reversed(self.events):
            kind = event.split(" ", 1)[0]
            if kind in (*_FINAL, "stop"):
                return kind
        return None

    @property
    def uncertain(self) -> WriteEntry | None:
        """The one write that may only partly have reached its fd (the process was killed
        during it): the last write, unless the script recorded a final event after it."""
        if not self.writes:
            return None
        last = self.last_event
        if not self.ends_with_write and last is not None and last.split(" ", 1)[0] in _FINAL:
            return None
        return self.writes[-1]


def read_progress(record: bytes | str | os.PathLike[str]) -> Progress:
    """Parse a progress record given as its bytes or its path. A torn last line is ignored."""
    if not isinstance(record, bytes):
        with open(record, "rb") as f:
            record = f.read()
    lines = record.split(b"\n")
    lines.pop()  # after the last newline: empty, or a line the process died writing
    rank: int | None = None
    pid: int | None = None
    writes: list[WriteEntry] = []
    events: list[str] = []
    ends_with_write = False
    for n, raw in enumerate(lines):
        text = raw.decode("ascii", errors="replace")
        parts = text.split()
        try:
            if n == 0 and parts and parts[0].startswith("fake_procs/"):
                fields = dict(p.split("=", 1) for p in parts[1:])
                rank, pid = int(fields["rank"]), int(fields["pid"])
            elif parts and parts[0] in ("w", "c"):
                _, letter, path, step, count = parts
                if path not in ("d", "b"):
                    raise ValueError(path)
                how: Path = "d" if path == "d" else "b"
                entry = WriteEntry(_STREAM[letter], how, int(step), int(count))
                if parts[0] == "c":  # correction of the last write on that stream and path
                    for i in range(len(writes) - 1, -1, -1):
                        w = writes[i]
                        if (w.stream, w.path) == (entry.stream, entry.path):
                            writes[i] = WriteEntry(w.stream, w.path, w.step, entry.nbytes)
                            break
                else:
                    writes.append(entry)
                ends_with_write = True
            else:
                events.append(text)
                ends_with_write = False
        except (KeyError, ValueError) as exc:
            raise ProgressError(f"progress line {n + 1} {text!r} is malformed ({exc})") from None
    return Progress(
        rank=rank,
        pid=pid,
        writes=tuple(writes),
        events=tuple(events),
        last_event=events[-1] if events else None,
        ends_with_write=ends_with_write,
    )


@dataclass
class _Replay:
    """Per (stream, path) queues of planned bytes, filled lazily from the script walk."""

    walk: Iterator[tuple[int, str, str, bytes]]
    queues: dict[tuple[str, str], deque[tuple[int, bytes]]] = field(default_factory=dict)

    def take(self, entry: WriteEntry) -> bytes:
        key = (entry.stream, entry.path)
        queue = self.queues.setdefault(key, deque())
        if entry.path == "d":  # one os.write per payload: the entry must match it
            if not queue:
                self._pull(key)
            step, chunk = queue.popleft()
            if step != entry.step or len(chunk) < entry.nbytes:
                raise ProgressError(
                    f"direct write of {entry.nbytes} bytes in step {entry.step} does not match "
                    f"the script (next planned: step {step}, {len(chunk)} bytes)"
                )
            return chunk[: entry.nbytes]
        out = bytearray()
        while len(out) < entry.nbytes:
            if not queue:
                self._pull(key)
                continue
            step, chunk = queue.popleft()
            need = entry.nbytes - len(out)
            out += chunk[:need]
            if len(chunk) > need:
                queue.appendleft((step, chunk[need:]))
        return bytes(out)

    def _pull(self, key: tuple[str, str]) -> None:
        for step, stream, mode, data in self.walk:
            path = "d" if mode == "fd" else "b"
            self.queues.setdefault((stream, path), deque()).append((step, data))
            if (stream, path) == key:
                return
        stream, path = key
        via = "os.write" if path == "d" else "the buffer"
        raise ProgressError(
            f"the record has more bytes for {stream} via {via} than the script writes"
            " (did something else write to it?)"
        )


@dataclass(frozen=True)
class Emitted:
    """Exactly what reached each fd, per the record; see `at_least` for a killed child."""

    streams: dict[Stream, bytes]
    progress: Progress
    uncertain: WriteEntry | None
    """A write that may have reached its fd only in part: its bytes end `streams[stream]`."""

    def at_least(self, stream: Stream) -> bytes:
        """Bytes certainly in the pipe: all of `streams[stream]` but an uncertain last write."""
        data = self.streams[stream]
        if self.uncertain is not None and self.uncertain.stream == stream:
            return data[: len(data) - self.uncertain.nbytes]
        return data


def emitted(script: Script, rank: int, progress_record: bytes | str | os.PathLike[str]) -> Emitted:
    """Replay `script` for `rank` against its progress record."""
    progress = read_progress(progress_record)
    if progress.rank is not None and progress.rank != rank:
        raise ProgressError(f"the record is rank {progress.rank}'s, not rank {rank}'s")
    data = script.to_dict()
    replay = _Replay(walk_writes(data["steps"], rank, data["corpus"]))
    out: dict[Stream, bytearray] = {s: bytearray() for s in STREAMS}
    for entry in progress.writes:
        out[entry.stream] += replay.take(entry)
    return Emitted({s: bytes(b) for s, b in out.items()}, progress, progress.uncertain)


def emitted_bytes(
    script: Script, rank: int, progress_record: bytes | str | os.PathLike[str]
) -> dict[Stream, bytes]:
    """{stream: bytes handed to its fd}, per the record (see `emitted` for the details)."""
    return emitted(script, rank, progress_record).streams


def planned_bytes(script: Script, rank: int) -> dict[Stream, bytes]:
    """What a complete run writes per stream, with no record (script order per stream).

    Exact unless one stream mixes `fd` and unflushed `buffered` writes, whose order at
    the fd depends on when the buffer fills; use `emitted` for those.
    """
    data = script.to_dict()
    out: dict[Stream, bytearray] = {s: bytearray() for s in STREAMS}
    for _, stream, _, chunk in walk_writes(data["steps"], rank, data["corpus"]):
        out["stdout" if stream == "stdout" else "stderr"] += chunk
    return {s: bytes(b) for s, b in out.items()}
