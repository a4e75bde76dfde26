"""Gathering the evidence of one stopped mesh for the oracle.

What the children wrote comes from their scripts and progress records (fake_procs);
what the stack did comes from the client's record, the per-proc files and the journal.
The two sides never share framing code: the oracle's expectations are computed by
fake_procs' own implementation of the tee rules.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from fake_procs import Script, emitted, find_tag, framed, progress_path

from .backend import MeshClient
from .evidence_model import (
    BarrierResult,
    MeshEvidence,
    RankEvidence,
    Rules,
    Stream,
    StreamEvidence,
)
from .lines import Lines, as_lines
from .stack import Ev, ExitInfo, StopProblem

STREAMS: tuple[Stream, Stream] = ("stdout", "stderr")


def died_abruptly(info: ExitInfo | None) -> bool:
    """A child that did not end through a clean quiesce (crash step, signal, kill)."""
    if info is None:
        return True
    if info.killed_by_stack is not None:
        return True
    return info.signal is not None or (info.code not in (0, None))


def file_lines_by_rank(
    files: Sequence[str],
    expected: Mapping[tuple[int, Stream], Sequence[bytes]],
    prefix_with_rank: bool,
) -> dict[tuple[int, Stream], list[bytes]]:
    """Attribute every line of the per-host files to a rank: by its `[rank] ` prefix, else
    by its fake_procs tag, else by whose expected lines hold it (else rank 0, where the
    oracle reports it as a line nobody emitted). `file_lines` without the line objects."""
    got = file_lines(files, {k: as_lines(v) for k, v in expected.items()}, prefix_with_rank)
    return {key: list(lines) for key, lines in got.items()}


def file_lines(
    files: Sequence[str], expected: Mapping[tuple[int, Stream], Lines], prefix_with_rank: bool
) -> dict[tuple[int, Stream], Lines]:
    """`file_lines_by_rank`, as `Lines`. The files are read a chunk at a time; a rank's run
    of `[rank] `-prefixed lines is cut out by a regex, not line by line; and a rank's lines
    that agree with what it emitted are not copied at all (its `Lines` is the emitted one)."""
    out = {key: _Collect(lines) for key, lines in expected.items()}
    owners = _Owners(expected, prefix_with_rank)
    counts = _Counts(out)
    for path in files:
        stream: Stream = "stdout" if path.endswith(".stdout") else "stderr"
        for chunk, ahead in _chunks(path):
            _attribute(chunk, ahead, stream, prefix_with_rank, owners, out, counts)
    return {key: c.lines() for key, c in out.items()}


_READ = 4 << 20
"""Bytes of a per-host file read at a time."""
LOOKAHEAD = 1 << 20
"""How far past a line the tie rule looks for the next line of each tied rank (bytes):
the same distance wherever the file happens to be cut into chunks."""


def _chunks(path: str) -> Iterator[tuple[bytes, bytes]]:
    """The file's complete lines (each ending with a newline), about `_READ` bytes at a
    time, each with the `LOOKAHEAD` bytes that follow it in the file; bytes after the last
    newline (a line torn by a kill) are left out."""
    if not Path(path).exists():
        return
    with open(path, "rb") as f:
        buf, eof = b"", False

        def fill(size: int) -> None:
            nonlocal buf, eof
            while not eof and len(buf) < size:
                block = f.read(_READ)
                buf, eof = buf + block, not block

        while True:
            fill(_READ)
            cut = buf.rfind(b"\n", 0, _READ) + 1 or buf.find(b"\n") + 1
            while not cut and not eof:  # a line longer than _READ: read on to its end
                fill(len(buf) + _READ)
                cut = buf.find(b"\n") + 1
            if not cut:
                return
            fill(cut + LOOKAHEAD)
            yield buf[:cut], buf[cut : cut + LOOKAHEAD]
            buf = buf[cut:]


class _Collect:
    """One (rank, stream)'s file lines as they are attributed. While they agree with what
    the rank emitted, only how far they got is kept; from the first disagreement on, the
    lines themselves (as blobs)."""

    __slots__ = ("count", "emitted", "parts", "pos")

    def __init__(self, emitted: Lines | None) -> None:
        self.emitted = emitted
        self.pos = 0  # bytes of the emitted blob matched so far
        self.parts: list[bytes] | None = None
        self.count = 0

    def add(self, piece: bytes, n: int) -> None:
        """`n` lines, each followed by a newline."""
        self.count += n
        if self.parts is None:
            ref = self.emitted.blob if self.emitted is not None else b""
            if ref.startswith(piece, self.pos):
                self.pos += len(piece)
                return
            self.parts = [ref[: self.pos]]
        self.parts.append(piece)

    def lines(self) -> Lines:
        ref = self.emitted
        if self.parts is None:
            if ref is not None and self.pos == len(ref.blob):
                return ref
            return Lines(ref.blob[: self.pos] if ref is not None else b"", self.count)
        return Lines(b"".join(self.parts), self.count)


class _Counts(Mapping[tuple[int, Stream], int]):
    """How many lines each (rank, stream) got so far: what `_Owners.take` needs."""

    def __init__(self, out: dict[tuple[int, Stream], _Collect]) -> None:
        self._out = out

    def __getitem__(self, key: tuple[int, Stream]) -> int:
        return self._out[key].count

    def __iter__(self) -> Iterator[tuple[int, Stream]]:
        return iter(self._out)

    def __len__(self) -> int:
        return len(self._out)


_RUN_CACHE: dict[int, re.Pattern[bytes]] = {}


def _run_end(rank: int) -> re.Pattern[bytes]:
    """Finds the newline after which a line no longer starts with `[rank] `."""
    pattern = _RUN_CACHE.get(rank)
    if pattern is None:
        pattern = _RUN_CACHE[rank] = re.compile(b"\n(?!" + re.escape(b"[%d] " % rank) + b")")
    return pattern


def _attribute(
    chunk: bytes,
    ahead: bytes,
    stream: Stream,
    prefix_with_rank: bool,
    owners: _Owners,
    out: dict[tuple[int, Stream], _Collect],
    counts: _Counts,
) -> None:
    """Give each line of `chunk` (complete lines) to its rank, in order."""
    pos, size = 0, len(chunk)
    while pos < size:
        eol = chunk.find(b"\n", pos)
        line = chunk[pos:eol]
        found = _rank_of(line, prefix_with_rank)
        if found is not None and prefix_with_rank and chunk.startswith(b"[%d] " % found, pos):
            m = _run_end(found).search(chunk, eol)  # the rank's run of lines from here
            end = size if m is None or m.start() == size - 1 else m.start() + 1
            piece = chunk[pos:end]
            n = piece.count(b"\n")
        else:
            if found is None:
                found = owners.take(stream, line, counts, (chunk, ahead, eol))
            piece, n, end = chunk[pos : eol + 1], 1, eol + 1
        key = (found, stream)
        collect = out.get(key)
        if collect is None:
            collect = out[key] = _Collect(None)
        collect.add(piece, n)
        pos = end


class _Owners:
    """Who emitted an untagged line. When several ranks on one host emitted identical
    lines, their copies interleave in the host's file in any order: each copy goes to the
    rank it brings closest to its next expected line, so a correct file never looks out
    of order. A copy nobody is owed goes to its first owner (a duplicate), or to rank 0
    when nobody emitted it.

    Only lines with no rank of their own (no prefix, no tag) are ever asked about, so only
    such expected lines are indexed, and only once the first such line is asked about."""

    def __init__(
        self, expected: Mapping[tuple[int, Stream], Sequence[bytes]], prefix_with_rank: bool
    ) -> None:
        self.expected = expected
        self.prefix_with_rank = prefix_with_rank
        self._at: dict[tuple[Stream, bytes], dict[int, list[int]]] | None = None
        self.paid: dict[tuple[Stream, bytes, int], int] = {}

    @property
    def at(self) -> dict[tuple[Stream, bytes], dict[int, list[int]]]:
        if self._at is None:
            self._at = {}
            for (rank, stream), lines in self.expected.items():
                for index, line in enumerate(lines):
                    if _rank_of(line, self.prefix_with_rank) is None:
                        self._at.setdefault((stream, line), {}).setdefault(rank, []).append(index)
        return self._at

    def take(
        self,
        stream: Stream,
        line: bytes,
        so_far: Mapping[tuple[int, Stream], int],
        where_in: tuple[bytes, bytes, int] = (b"\n", b"", 0),
    ) -> int:
        """The rank this copy of `line` belongs to; `where_in` is (the chunk, the bytes
        after it, the offset of the line's newline in the chunk), for the tie rule."""
        where = self.at.get((stream, line))
        if not where:
            return 0
        tied: list[tuple[int, int, int]] = []  # (gap to the next expected copy, rank, index)
        for rank, indices in where.items():
            if self.paid.get((stream, line, rank), 0) >= len(indices):
                continue  # every copy this rank emitted is already accounted for
            cursor = so_far.get((rank, stream), 0)
            nxt = bisect_left(indices, cursor)
            gap = indices[nxt] - cursor if nxt < len(indices) else cursor - indices[-1]
            tied.append((gap, rank, indices[min(nxt, len(indices) - 1)]))
        if not tied:
            rank = next(iter(where))
        else:
            best = min(t[0] for t in tied)
            tied = [t for t in tied if t[0] == best]
            rank = (
                tied[0][1] if len(tied) == 1 else self._first_due(stream, tied, _after(*where_in))
            )
        key = (stream, line, rank)
        self.paid[key] = self.paid.get(key, 0) + 1
        return rank

    def _first_due(self, stream: Stream, tied: list[tuple[int, int, int]], after: bytes) -> int:
        """Among ranks equally owed this copy, the one whose next line comes first in what
        follows it in the file (within `LOOKAHEAD`): it needs the copy soonest (the copies
        are identical, so any other choice can make a rank look out of order that was
        not). A rank whose next line is not there comes last; then the lower rank."""
        due: list[tuple[int, int]] = []
        for _, rank, index in tied:
            lines = self.expected[rank, stream]
            following = lines[index + 1] if index + 1 < len(lines) else None
            at = -1 if following is None else after.find(b"\n" + following + b"\n")
            due.append((at if at >= 0 else len(after) + 1, rank))
        return min(due)[1]


def _after(chunk: bytes, ahead: bytes, eol: int) -> bytes:
    """The `LOOKAHEAD` bytes after the newline at `chunk[eol]`, that newline first."""
    window = chunk[eol : eol + LOOKAHEAD + 1]
    short = LOOKAHEAD + 1 - len(window)
    return window + ahead[:short] if short > 0 else window


def _rank_of(line: bytes, prefix_with_rank: bool) -> int | None:
    if prefix_with_rank:
        if line.startswith(b"["):
            end = line.find(b"] ")
            if end > 1 and line[1:end].isdigit():
                return int(line[1:end])
        return None
    tag = find_tag(line)
    return tag.rank if tag is not None else None


def eof_bytes(journal: Sequence[dict[str, Any]], rank: int, stream: str) -> int | None:
    for e in journal:
        if e["ev"] == Ev.EOF and e.get("rank") == rank and e.get("stream") == stream:
            return int(e["bytes"])
    return None


def _settle(em: Any, stream: Stream, seen: int | None) -> bytes:
    """A write cut short by a kill from outside reached the pipe only in part: count it
    as emitted exactly as far as the pipe shows, never beyond what the record claims."""
    full: bytes = em.streams[stream]
    low: bytes = em.at_least(stream)
    if seen is None or seen >= len(full):
        return full
    return full[: max(seen, len(low))]


def console_bytes(journal: Sequence[dict[str, Any]]) -> dict[tuple[int, Stream], int]:
    return {(e["rank"], e["stream"]): e["bytes"] for e in journal if e["ev"] == Ev.CONSOLE_BYTES}


def _emitted_streams(
    client: MeshClient,
    scripts: Sequence[Script],
    journal: Sequence[dict[str, Any]],
    prefix_with_rank: bool,
) -> tuple[
    dict[tuple[int, Stream], Lines],
    dict[tuple[int, Stream], int],
    dict[tuple[int, Stream], bool],
    set[int],
]:
    """What each child wrote, replayed from its script and progress record: per rank and
    stream the framed lines, the byte count and whether it ends with a partial line; and
    the ranks whose script ended by an exit or crash step."""
    expected: dict[tuple[int, Stream], Lines] = {}
    sizes: dict[tuple[int, Stream], int] = {}
    partial: dict[tuple[int, Stream], bool] = {}
    abrupt: set[int] = set()
    for rank, script in enumerate(scripts):
        record = Path(progress_path(client.record_dir, rank))
        wrote: dict[Stream, bytes] = {}
        if record.exists():
            em = emitted(script, rank, record)
            wrote = dict(em.streams)
            if em.progress.ending in ("exit", "crash"):  # os._exit / a signal: no quiesce
                abrupt.add(rank)
            if em.uncertain is not None:  # killed from outside in the middle of a write
                wrote[em.uncertain.stream] = _settle(
                    em, em.uncertain.stream, eof_bytes(journal, rank, em.uncertain.stream)
                )
            del em
        for stream in STREAMS:
            data = wrote.pop(stream, b"")
            sizes[rank, stream] = len(data)
            partial[rank, stream] = bool(data) and not data.endswith(b"\n")
            blob, count = framed(data, rank=rank, prefix_with_rank=prefix_with_rank)
            del data  # the raw bytes of one stream at a time, never of every rank at once
            expected[rank, stream] = Lines(blob, count)
    return expected, sizes, partial, abrupt


def gather(
    client: MeshClient,
    scripts: Sequence[Script],
    *,
    seed: int | None,
    prefix_with_rank: bool,
    stream_to_client: bool,
    aggregated: bool,
    files: Sequence[str],
    barriers: Sequence[BarrierResult],
    faulted_ranks: frozenset[int] = frozenset(),
    stop_problems: Sequence[StopProblem] = (),
    rules: Rules = "literal",
    batch_lines: int | None = None,
) -> MeshEvidence:
    journal = client.read_journal()
    gate = client.config.file_log_gate()
    tee = console_bytes(journal)
    expected, sizes, partial, abrupt = _emitted_streams(client, scripts, journal, prefix_with_rank)
    in_files = _file_lines(client, files, expected, prefix_with_rank) if gate is None else None
    rank_evidence = []
    unanswered: dict[int, str] = dict(getattr(client, "unanswered", None) or {})
    delivered = _delivered(client, expected)
    for rank in range(len(scripts)):
        exit_info = client.exits.get(rank)
        streams = []
        for stream in STREAMS:
            key = (rank, stream)
            streams.append(
                StreamEvidence(
                    rank=rank,
                    stream=stream,
                    emitted=expected[key],
                    ends_with_partial=partial[key],
                    emitted_bytes=sizes[key],
                    delivered=delivered.get(key, _NONE),
                    file_lines=None if in_files is None else in_files.get(key, _NONE),
                    console_bytes=tee.get(key),
                )
            )
        rank_evidence.append(
            RankEvidence(
                rank=rank,
                exit_code=exit_info.code if exit_info else None,
                exit_signal=exit_info.signal if exit_info else None,
                crashed=(died_abruptly(exit_info) and rank not in unanswered)
                or rank in faulted_ranks
                or rank in abrupt,
                streams=(streams[0], streams[1]),
                unanswered=unanswered.get(rank) if exit_info is None else None,
            )
        )
    return MeshEvidence(
        seed=seed,
        ranks=tuple(rank_evidence),
        journal=tuple(journal),
        barriers=tuple(barriers),
        stream_to_client=stream_to_client,
        aggregated=aggregated,
        files_expected=gate is None,
        files=tuple(files),
        files_gone=tuple(f for f in files if not os.path.exists(f)),
        files_gate_reason=gate,
        stop_problems=tuple(stop_problems),
        journal_expected=bool(getattr(client, "has_journal", True)),
        rules=rules,
        batch_lines=batch_lines,
        barrier_expected=bool(getattr(client, "has_barrier", True)),
    )


_NONE = Lines()


def _file_lines(
    client: MeshClient,
    files: Sequence[str],
    expected: Mapping[tuple[int, Stream], Lines],
    prefix_with_rank: bool,
) -> dict[tuple[int, Stream], Lines]:
    """The per-proc files' lines by rank: from the backend when its files are per rank
    (an optional member, `file_lines_by_rank()`: the rank is the runtime's label of the
    file, never the line's content), else attributed line by line (`file_lines`)."""
    own = getattr(client, "file_lines_by_rank", None)
    if own is None:
        return file_lines(files, expected, prefix_with_rank)
    by_rank: Mapping[tuple[int, str], Lines] = own()
    out: dict[tuple[int, Stream], Lines] = {}
    for (rank, name), lines in by_rank.items():
        key = (rank, _stream(name))
        mine = expected.get(key)
        out[key] = mine if mine is not None and mine == lines else lines
    return out


def _delivered(
    client: MeshClient, expected: Mapping[tuple[int, Stream], Lines]
) -> dict[tuple[int, Stream], Lines]:
    """What the client received, per (rank, stream). Read once (a backend may compute it
    from its output files); from the reference client's batches when it offers them, so
    no line is split out. A stream that agrees with what was emitted shares its `Lines`."""
    out: dict[tuple[int, Stream], Lines] = {}
    blobs: Mapping[tuple[int, str], list[bytes]] | None = getattr(client, "delivered_blobs", None)
    if blobs is not None:
        for (rank, name), batches in blobs.items():
            key = (rank, _stream(name))
            mine = expected.get(key)
            same = mine is not None and _agrees(mine.blob, batches)
            out[key] = mine if same and mine is not None else Lines.joined(batches)
        return out
    for (rank, name), lines in client.delivered.items():
        key = (rank, _stream(name))
        got = as_lines(lines)
        mine = expected.get(key)
        out[key] = mine if mine is not None and mine == got else got
    return out


def _stream(name: str) -> Stream:
    return "stdout" if name == "stdout" else "stderr"


def _agrees(blob: bytes, batches: Sequence[bytes]) -> bool:
    """Whether the batches (lines joined by newlines) joined by newlines, with a final
    newline, are exactly `blob`: compared in place, batch by batch."""
    pos = 0
    for batch in batches:
        end = pos + len(batch)
        if end >= len(blob) or blob[end] != 0x0A or not blob.startswith(batch, pos):
            return False
        pos = end + 1
    return pos == len(blob)


def abrupt_ranks(evidence: MeshEvidence) -> frozenset[int]:
    return frozenset(r.rank for r in evidence.ranks if r.crashed)
