"""What a mesh left behind after teardown, and how a report explains itself (SPEC 3.2).

Evidence types are what the harness gathers once a mesh stopped; report types are what
`pytest_meshlog.oracle.evaluate` concludes from them. Rendering lives with the report so a
failure message can be rebuilt from the report alone, without re-running the oracle.

Notation in messages: `#i` is an index into what a child emitted on one stream, `@p` a
position in what a destination (client or file) received.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from .journal_view import blame_time, concerns, fields_text
from .stack.outcomes import BarrierOutcome, StopProblem
from .stack.outcomes import BarrierStatus as BarrierStatus

BarrierResult = BarrierOutcome
"""The answer one barrier caller got (the stack's own result type, SPEC 1.11)."""

Stream = Literal["stdout", "stderr"]
Where = Literal["client", "file"]
BarrierExpectation = Literal["complete", "timeout"]

RULE_CRASH = "crash-last-batch"
"""A crashed rank may lose a suffix of what it sent to the client (SPEC 1.5)."""
RULE_STREAMING_OFF = "streaming-off"
RULE_FILE_ERROR = "file-write-error"  # the host journaled failed writes to that stream's file
RULE_FILE_DEADLINE = "file-close-deadline"
"""File lines of a host's stream whose writer was still writing (a slow disk) at the close
deadline and was cancelled (journal `file_writer_timed_out`). Explained, not excused: the
timed-out writer is a finding of its own (kind `file-close-deadline`), which fails the test."""
"""With stream_to_client off the client gets nothing by design (SPEC 1.6)."""

_CONTEXT = 3  # lines either side of the first problem line in a diff hunk
_MAX_ROWS = 24  # rows in one diff hunk
_MAX_SHOWN = 8  # problems rendered in full by assert_clean
_LINE_CHARS = 100  # characters of one line's repr in a message
_SCAN = 10_000  # emitted lines searched for the nearest aligned neighbour of a hunk
_TIMELINE_WIDTH = 5  # journal events either side of the anchor in a problem message


# --------------------------------------------------------------------------- evidence


@dataclass(frozen=True)
class StreamEvidence:
    """One stream of one rank: what should have been forwarded, and what was.

    `emitted` holds the lines as the tee frames them (prefix and truncation applied), the
    last one being the final partial line when `ends_with_partial`. In aggregated mode
    `delivered` holds one entry per line the client counted (a row of N similar lines is N).

    The gathered evidence holds each as a `pytest_meshlog.lines.Lines` (the tuple of its
    lines, kept as one blob), and a destination that got exactly what was emitted shares
    the emitted one; a tuple of lines is as good (tests build evidence from tuples).
    """

    rank: int
    stream: Stream
    emitted: Sequence[bytes] = field(repr=False)
    ends_with_partial: bool
    emitted_bytes: int
    delivered: Sequence[bytes] = field(repr=False)
    file_lines: Sequence[bytes] | None = field(default=None, repr=False)
    console_bytes: int | None = None


@dataclass(frozen=True)
class RankEvidence:
    """One child: how it ended, and its two streams."""

    rank: int
    exit_code: int | None
    exit_signal: int | None
    crashed: bool
    streams: tuple[StreamEvidence, StreamEvidence]
    unanswered: str | None = None
    """Why this rank's end is unknown (its host did not answer within the stop deadline);
    such a rank did not crash, and its losses are not excused as a crash's."""


@dataclass(frozen=True)
class MeshEvidence:
    """Everything the oracle judges, gathered after the mesh stopped."""

    seed: int | None
    ranks: tuple[RankEvidence, ...]
    journal: tuple[Mapping[str, Any], ...] = field(default=(), repr=False)
    barriers: tuple[BarrierResult, ...] = ()
    stream_to_client: bool = True
    aggregated: bool = False
    files_expected: bool = False
    files: tuple[str, ...] = ()
    files_gate_reason: str | None = None
    stop_problems: tuple[StopProblem, ...] = ()  # what the stack's own stop() saw go wrong
    journal_expected: bool = True  # False: the backend keeps no journal (rules not checkable)


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True, slots=True)
class Loss:
    """An emitted line that never reached `where`; `rule` names what allows it (None: nothing)."""

    rank: int
    stream: Stream
    index: int
    line: bytes
    where: Where
    rule: str | None

    @property
    def allowed(self) -> bool:
        return self.rule is not None


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A line that arrived at `where` more times than it was emitted."""

    rank: int
    stream: Stream
    where: Where
    position: int
    index: int
    line: bytes


@dataclass(frozen=True, slots=True)
class OrderViolation:
    """Line `index` arrived on the wrong side of line `crossed` of the same rank and stream."""

    rank: int
    stream: Stream
    where: Where
    position: int
    index: int
    line: bytes
    crossed: int


@dataclass(frozen=True, slots=True)
class Unexpected:
    """A line that arrived at `where` although this rank never emitted it on this stream."""

    rank: int
    stream: Stream
    where: Where
    position: int
    line: bytes


@dataclass(frozen=True)
class Finding:
    """A broken teardown rule that is not about individual lines (EOF, Flush(None), ...)."""

    kind: str
    message: str
    rank: int | None = None
    stream: Stream | None = None
    t: float | None = None  # journal time to centre the timeline on


@dataclass(frozen=True)
class StreamMatch:
    """How one destination's lines line up with the emitted ones.

    The aligned head and tail are stored as lengths, so an exact match costs nothing to keep;
    only the middle (where the sequences differ) is spelled out.
    """

    n_emitted: int
    n_delivered: int
    head: int  # emitted[:head] == delivered[:head]
    tail: int  # the last `tail` lines of both are equal, beyond the head
    in_order: Mapping[int, int] = field(default_factory=dict, repr=False)  # middle: # -> @
    moved: Mapping[int, int] = field(default_factory=dict, repr=False)  # out of order: # -> @
    duplicates: Mapping[int, int] = field(default_factory=dict, repr=False)  # @ -> #
    unexpected: Sequence[int] = field(default=(), repr=False)  # @ of lines never emitted
    lost: Sequence[int] = field(default=(), repr=False)  # # never delivered, ascending
    last_delivered: int = -1  # highest # that arrived at all

    @property
    def exact(self) -> bool:
        return self.head + self.tail == self.n_emitted == self.n_delivered

    def position(self, index: int) -> int | None:
        """Where emitted line `index` arrived in order, or None (lost or moved)."""
        if index < self.head:
            return index
        if index >= self.n_emitted - self.tail:
            return index - self.n_emitted + self.n_delivered
        return self.in_order.get(index)


@dataclass(frozen=True)
class StreamReport:
    """Counts for one rank and stream."""

    rank: int
    stream: Stream
    emitted: int
    delivered: int
    in_files: int | None
    emitted_bytes: int
    console_bytes: int | None
    lost_to_client: int
    lost_to_file: int
    partial_line_forwarded: bool | None
    flush_none_at_eof: int
    eof_seen: bool


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True, repr=False)
class TeardownReport:
    """The oracle's verdict on one mesh teardown; `assert_clean` turns it into a test result."""

    seed: int | None
    streams: tuple[StreamReport, ...]
    lost: tuple[Loss, ...]
    duplicates: tuple[Duplicate, ...]
    order_violations: tuple[OrderViolation, ...]
    unexpected: tuple[Unexpected, ...]
    findings: tuple[Finding, ...]
    barriers: tuple[BarrierResult, ...]
    files_expected: bool
    files: tuple[str, ...]
    files_gate_reason: str | None
    journal: tuple[Mapping[str, Any], ...]
    evidence: MeshEvidence
    matches: Mapping[tuple[int, Stream, Where], StreamMatch]

    def __repr__(self) -> str:
        return (
            f"TeardownReport(seed={self.seed}, ranks={len(self.evidence.ranks)}, "
            f"lost={len(self.lost)}, duplicates={len(self.duplicates)}, "
            f"order_violations={len(self.order_violations)}, unexpected={len(self.unexpected)}, "
            f"findings={len(self.findings)}, barriers={len(self.barriers)})"
        )

    # ---- lookups

    def stream(self, rank: int, stream: Stream) -> StreamReport:
        for s in self.streams:
            if s.rank == rank and s.stream == stream:
                return s
        raise KeyError((rank, stream))

    @property
    def partial_line_forwarded(self) -> dict[tuple[int, Stream], bool | None]:
        """Per rank and stream: the final partial line arrived (None: there was none)."""
        return {(s.rank, s.stream): s.partial_line_forwarded for s in self.streams}

    @property
    def flush_none_at_eof(self) -> dict[tuple[int, Stream], int]:
        """Per rank and stream: how often the tee posted Flush(None) at EOF (should be 1)."""
        return {(s.rank, s.stream): s.flush_none_at_eof for s in self.streams}

    @property
    def unexplained(self) -> tuple[Loss, ...]:
        return tuple(loss for loss in self.lost if loss.rule is None)

    # ---- verdict

    def problems(
        self, lost_at_most: int = 0, barrier: BarrierExpectation = "complete"
    ) -> list[str]:
        """One readable paragraph per thing that went wrong; empty when the teardown is clean."""
        out: list[str] = []
        unexplained = self.unexplained
        if len(unexplained) > lost_at_most:
            budget = f" (at most {lost_at_most} allowed)" if lost_at_most else ""
            for key, group in _grouped(unexplained).items():
                out.append(self._loss_problem(key, group, budget))
        for key, dups in _grouped(self.duplicates).items():
            out.append(self._duplicate_problem(key, dups))
        for key, moved in _grouped(self.order_violations).items():
            out.append(self._order_problem(key, moved))
        for key, extra in _grouped(self.unexpected).items():
            out.append(self._unexpected_problem(key, extra))
        for f in self.findings:
            out.append(self._finding_problem(f))
        out.extend(self._barrier_problems(barrier))
        return out

    def assert_clean(self, lost_at_most: int = 0, barrier: BarrierExpectation = "complete") -> None:
        """Raise AssertionError explaining every problem; mirrors the `meshlog_expect` marker."""
        problems = self.problems(lost_at_most=lost_at_most, barrier=barrier)
        if not problems:
            return
        seed = (
            f"seed {self.seed}; rerun with --meshlog-seed {self.seed}"
            if self.seed is not None
            else "no seed"
        )
        n = len(problems)
        parts = [f"meshlog teardown is not clean: {n} problem{'s' * (n != 1)} ({seed})"]
        for i, text in enumerate(problems[:_MAX_SHOWN], 1):
            parts.append(f"{i}) {text}")
        if n > _MAX_SHOWN:
            parts.append(
                f"... and {n - _MAX_SHOWN} more: "
                + "; ".join(p.splitlines()[0] for p in problems[_MAX_SHOWN:])
            )
        allowed = Counter((x.rank, x.stream, x.where, x.rule) for x in self.lost if x.rule)
        if allowed:
            parts.append(
                "allowed losses (not counted): "
                + "; ".join(
                    f"rank {r} {s} {w}: {n} line{'s' * (n != 1)} ({rule})"
                    for (r, s, w, rule), n in sorted(allowed.items())
                )
            )
        raise AssertionError("\n".join(parts))

    def summary(self) -> dict[str, Any]:
        """Numbers for a terminal summary or an export hook; JSON-serialisable."""
        by_rule = Counter(x.rule or "unexplained" for x in self.lost)
        latencies = [b.latency_s for b in self.barriers if b.completed]
        partial = [s.partial_line_forwarded for s in self.streams]
        return {
            "seed": self.seed,
            "ranks": len(self.evidence.ranks),
            "lines_emitted": sum(s.emitted for s in self.streams),
            "lines_delivered": sum(s.delivered for s in self.streams),
            "lines_in_files": sum(s.in_files or 0 for s in self.streams),
            "lost": dict(sorted(by_rule.items())),
            "duplicates": len(self.duplicates),
            "order_violations": len(self.order_violations),
            "unexpected": len(self.unexpected),
            "findings": [f.kind for f in self.findings],
            "partial_lines": {
                "expected": sum(p is not None for p in partial),
                "forwarded": sum(p is True for p in partial),
            },
            "barriers": [
                {"version": b.version, "status": b.status, "latency_s": b.latency_s}
                for b in self.barriers
            ],
            "barrier_latency_s": {
                "max": max(latencies, default=None),
                "mean": sum(latencies) / len(latencies) if latencies else None,
            },
            "files": len(self.files),
            "files_gate_reason": self.files_gate_reason,
        }

    def timeline(self, around: float | None = None, width: int = 8, rank: int | None = None) -> str:
        """The journal, one event a line, times in ms since the first event.

        With `around` (a journal time) only `width` events either side of it are shown and
        the nearest is marked `>`; with `rank` only that rank's events and global ones.
        """
        events = [e for e in self.journal if rank is None or concerns(e, rank)]
        if not events:
            return "    (journal is empty)"
        t0 = float(self.journal[0]["t"])
        mark = -1
        lo, hi = 0, len(events)
        if around is not None:
            mark = min(range(len(events)), key=lambda i: abs(float(events[i]["t"]) - around))
            lo, hi = max(0, mark - width), min(len(events), mark + width + 1)
        rows = [_event_row(e, t0, i == mark) for i, e in enumerate(events[lo:hi], lo)]
        if lo:
            rows.insert(0, f"      ... {lo} earlier event{'s' * (lo != 1)}")
        if hi < len(events):
            rows.append(f"      ... {len(events) - hi} later event{'s' * (len(events) - hi != 1)}")
        return "\n".join(rows)

    # ---- rendering helpers

    def _lines(
        self, rank: int, stream: Stream, where: Where
    ) -> tuple[Sequence[bytes], Sequence[bytes]]:
        for r in self.evidence.ranks:
            for s in r.streams:
                if s.rank == rank and s.stream == stream:
                    got = s.delivered if where == "client" else (s.file_lines or ())
                    return s.emitted, got
        return (), ()

    def _title(self, rank: int, stream: Stream) -> str:
        for r in self.evidence.ranks:
            if r.rank == rank and r.unanswered:
                return f"rank {rank} {stream} (end unknown: {r.unanswered})"
            if r.rank == rank and r.crashed:
                how = f"signal {r.exit_signal}" if r.exit_signal else f"exit {r.exit_code}"
                return f"rank {rank} {stream} (crashed: {how})"
        return f"rank {rank} {stream}"

    def _context(self, rank: int, stream: Stream, where: Where, center: int) -> list[str]:
        emitted, got = self._lines(rank, stream, where)
        match = self.matches.get((rank, stream, where))
        if match is None:
            return []
        lo, hi = center - _CONTEXT, center + _CONTEXT + 1
        rules = {
            x.index: x.rule
            for x in self.lost
            if (x.rank, x.stream, x.where) == (rank, stream, where) and lo <= x.index < hi
        }
        rows = [f"  --- emitted ({len(emitted)} lines)", f"  +++ {_DEST[where]} ({len(got)} lines)"]
        rows += _hunk(emitted, got, match, center, rules)
        if where == "client" and self.evidence.aggregated:
            rows.append(
                "  (aggregated: only counts are compared; the missing lines are"
                " presumed to be the last ones)"
            )
        return rows

    def _timeline_near(self, rank: int | None, stream: Stream | None, t: float | None) -> str:
        if not self.journal:
            return "  timeline: (journal is empty)"
        if t is None and rank is not None:
            t = blame_time(self.journal, rank, stream)
        if t is None:  # nothing specific to centre on: show how teardown ended
            t = float(self.journal[-1]["t"])
        body = self.timeline(around=t, width=_TIMELINE_WIDTH, rank=rank)
        return "  timeline (ms since the first journal event):\n" + body

    def _loss_problem(self, key: _Key, group: list[Loss], budget: str) -> str:
        rank, stream, where = key
        emitted, _ = self._lines(rank, stream, where)
        first = group[0]
        tail = " (the final partial line)" if self._is_partial(rank, stream, first.index) else ""
        n = len(group)
        head = (
            f"{self._title(rank, stream)}: {n} of {len(emitted)} emitted lines "
            f"never reached the {_DEST[where]}, unexplained{budget}"
        )
        rows = [head, f"  first missing: #{first.index} {_show(first.line)}{tail}"]
        if n > 1:
            rows.append("  missing: " + _ranges([x.index for x in group]))
        rows += self._context(rank, stream, where, first.index)
        rows.append(self._timeline_near(rank, stream, None))
        return "\n".join(rows)

    def _duplicate_problem(self, key: _Key, dups: list[Duplicate]) -> str:
        rank, stream, where = key
        d = dups[0]
        rows = [
            f"{self._title(rank, stream)}: {len(dups)} duplicate line{'s' * (len(dups) != 1)} "
            f"at the {_DEST[where]}",
            f"  first: @{d.position} {_show(d.line)} repeats #{d.index}",
        ]
        rows += self._context(rank, stream, where, self._emitted_near(key, d.position))
        return "\n".join(rows)

    def _order_problem(self, key: _Key, moved: list[OrderViolation]) -> str:
        rank, stream, where = key
        v = moved[0]
        early, late = sorted((v.index, v.crossed))
        rows = [
            f"{self._title(rank, stream)}: {len(moved)} line{'s' * (len(moved) != 1)} out of "
            f"order at the {_DEST[where]} (order is guaranteed per rank and stream)",
            f"  first: #{v.index} {_show(v.line)} arrived at @{v.position}; "
            f"#{early} was emitted before #{late} but arrived after it",
        ]
        rows += self._context(rank, stream, where, v.index)
        return "\n".join(rows)

    def _unexpected_problem(self, key: _Key, extra: list[Unexpected]) -> str:
        rank, stream, where = key
        u = extra[0]
        rows = [
            f"{self._title(rank, stream)}: {len(extra)} line{'s' * (len(extra) != 1)} at the "
            f"{_DEST[where]} that this rank never emitted on {stream}",
            f"  first: @{u.position} {_show(u.line)}{self._emitted_elsewhere(u.line)}",
        ]
        rows += self._context(rank, stream, where, self._emitted_near(key, u.position))
        return "\n".join(rows)

    def _finding_problem(self, f: Finding) -> str:
        where = self._title(f.rank, f.stream) + ": " if f.rank is not None and f.stream else ""
        if f.rank is None and f.t is None:
            return f"{where}{f.message}"
        return f"{where}{f.message}\n{self._timeline_near(f.rank, f.stream, f.t)}"

    def _barrier_problems(self, expect: BarrierExpectation) -> list[str]:
        out: list[str] = []
        if not self.barriers:
            out.append("no barrier ran: stop() must flush before stopping the children")
        completed = [b.version for b in self.barriers if b.completed]
        for b in self.barriers:
            if b.status == "timeout" and not b.missing_ranks:
                out.append(f"barrier v{b.version} timed out without naming the missing ranks")
            elif (
                b.status == "timeout"
                and expect == "complete"
                and not self._all_crashed(b.missing_ranks)
            ):
                out.append(
                    f"barrier v{b.version} timed out after {b.latency_s:.2f} s: "
                    f"rank{'s' * (len(b.missing_ranks) != 1)} "
                    f"{', '.join(map(str, b.missing_ranks))} never acked "
                    f"(acked: {', '.join(map(str, b.acked_ranks)) or 'none'})"
                    + "\n"
                    + self._timeline_near(None, None, self._journal_time(b.version))
                )
            elif b.status == "completed" and b.missing_ranks:
                out.append(
                    f"barrier v{b.version} reported completion with rank"
                    f"{'s' * (len(b.missing_ranks) != 1)} {', '.join(map(str, b.missing_ranks))}"
                    " still missing: a barrier completes only when every expected rank acked"
                )
            elif b.status == "superseded" and not any(v > b.version for v in completed):
                out.append(f"barrier v{b.version} was superseded but no later barrier completed")
        if expect == "timeout" and not any(b.status == "timeout" for b in self.barriers):
            out.append(
                f"expected a barrier to time out, but none did "
                f"({len(completed)} of {len(self.barriers)} completed)"
            )
        return out

    def _all_crashed(self, ranks: Sequence[int]) -> bool:
        """A crashed child never acks: a barrier that timed out only on such ranks ended as
        SPEC 1.11 requires (by its deadline, naming them)."""
        crashed = {r.rank for r in self.evidence.ranks if r.crashed}
        return bool(ranks) and all(r in crashed for r in ranks)

    def _journal_time(self, version: int) -> float | None:
        """When barrier `version` timed out, else when it started (None: not journaled)."""
        times = {
            e.get("ev"): float(e["t"])
            for e in self.journal
            if e.get("version") == version and e.get("src") == "driver"
        }
        return times.get("barrier_timeout", times.get("barrier_started"))

    def _is_partial(self, rank: int, stream: Stream, index: int) -> bool:
        for r in self.evidence.ranks:
            for s in r.streams:
                if s.rank == rank and s.stream == stream:
                    return s.ends_with_partial and index == len(s.emitted) - 1
        return False

    def _emitted_near(self, key: _Key, position: int) -> int:
        """The emitted index whose neighbourhood shows delivered position `position`."""
        match = self.matches[key]
        if position < match.head:
            return position
        if position >= match.n_delivered - match.tail:
            return position - match.n_delivered + match.n_emitted
        before = [i for i, p in match.in_order.items() if p < position]
        return max(before, default=match.head - 1) + 1

    def _emitted_elsewhere(self, line: bytes) -> str:
        for r in self.evidence.ranks:
            for s in r.streams:
                if line in s.emitted:
                    return f" (emitted by rank {s.rank} on {s.stream}: misrouted?)"
        return ""


_DEST: dict[Where, str] = {"client": "client", "file": "per-proc file"}
_Key = tuple[int, Stream, Where]


_T = TypeVar("_T", Loss, Duplicate, OrderViolation, Unexpected)


def _grouped(items: Iterable[_T]) -> dict[_Key, list[_T]]:
    out: dict[_Key, list[_T]] = {}
    for x in items:
        out.setdefault((x.rank, x.stream, x.where), []).append(x)
    return out


def _show(line: bytes, limit: int = _LINE_CHARS) -> str:
    text = repr(line)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def _ranges(indices: Sequence[int], limit: int = 12) -> str:
    """`#3, #7-#9, ...`: runs of consecutive indices, the first `limit` runs."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    shown = ", ".join(f"#{a}" if a == b else f"#{a}-#{b}" for a, b in runs[:limit])
    return shown + (f", ... ({len(runs) - limit} more runs)" if len(runs) > limit else "")


def _hunk(
    emitted: Sequence[bytes],
    got: Sequence[bytes],
    match: StreamMatch,
    center: int,
    rules: Mapping[int, str | None],
) -> list[str]:
    """A unified-diff-like window of emitted vs received lines around emitted index `center`."""
    lo, hi = max(0, center - _CONTEXT), min(match.n_emitted, center + _CONTEXT + 1)
    before = _nearest_position(match, range(lo - 1, max(-1, lo - _SCAN), -1))
    after = _nearest_position(match, range(hi, min(match.n_emitted, hi + _SCAN)))
    q = 0 if before is None else before + 1
    if after is None:
        after = match.n_delivered if hi + _SCAN >= match.n_emitted else q + 2 * _CONTEXT + 1
    q_end = min(after, match.n_delivered)
    extra = {p: f"(repeats #{i})" for p, i in match.duplicates.items() if q <= p < q_end}
    extra.update({p: "(never emitted)" for p in match.unexpected if q <= p < q_end})
    extra.update({p: f"(#{i}, out of order)" for i, p in match.moved.items() if q <= p < q_end})
    rows: list[str] = []

    def added(upto: int) -> None:
        nonlocal q
        while q < upto:
            rows.append(f"  + @{q:<6} {_show(got[q])} {extra.get(q, '')}".rstrip())
            q += 1

    if lo:
        rows.append(f"  @@ from #{lo}, @{q} @@")
    for i in range(lo, hi):
        p = match.position(i)
        if p is None:
            if i in match.moved:
                note = f"(arrived out of order at @{match.moved[i]})"
            else:
                note = f"(lost; allowed: {rules[i]})" if rules.get(i) else "(lost)"
            rows.append(f"  - #{i:<6} {_show(emitted[i])} {note}")
        else:
            added(p)
            rows.append(f"    #{i:<6} {_show(emitted[i])}")
            q = p + 1
    added(q_end)
    if len(rows) > _MAX_ROWS:
        rows = [*rows[:_MAX_ROWS], f"  ... {len(rows) - _MAX_ROWS} more rows"]
    return rows


def _nearest_position(match: StreamMatch, indices: range) -> int | None:
    """The first in-order delivered position among emitted `indices` (scanned in order)."""
    for i in indices:
        p = match.position(i)
        if p is not None:
            return p
    return None


def _event_row(event: Mapping[str, Any], t0: float, marked: bool) -> str:
    fields = fields_text(event)
    ms = (float(event["t"]) - t0) * 1000.0
    row = f"  {'>' if marked else ' '} {ms:+10.1f} ms  {event.get('src', '?'):<7} {event.get('ev')}"
    row = f"{row} {fields}" if fields else row
    return row if len(row) <= 160 else row[:157] + "..."
