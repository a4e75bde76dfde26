"""The text report: one paragraph per problem of a `TeardownReport`, with a diff hunk of
emitted against received lines and the journal around the event to blame (SPEC 3.2).

`TeardownReport.problems()` and `assert_clean()` are this module (its `timeline()` is
`journal_view.timeline_text`); the HTML
report shows the same paragraphs (`ReportEntry.problems`) and flags losses at the same
events (`journal_view.blame`). It renders from the report alone, without re-running the
oracle.

Notation: `#i` is an index into what a child emitted on one stream, `@p` a position in
what a destination (client or file) received.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from .journal_view import blame_time, timeline_text
from .stack import Ev

if TYPE_CHECKING:
    from .report import (
        BarrierExpectation,
        CrashLoss,
        Duplicate,
        Finding,
        Loss,
        OrderViolation,
        Stream,
        StreamMatch,
        TeardownReport,
        Unexpected,
        Where,
    )

_CONTEXT = 3  # lines either side of the first problem line in a diff hunk
_MAX_ROWS = 24  # rows in one diff hunk
_MAX_SHOWN = 8  # problems rendered in full by assert_clean
_LINE_CHARS = 100  # characters of one line's repr in a message
_SCAN = 10_000  # emitted lines searched for the nearest aligned neighbour of a hunk
_TIMELINE_WIDTH = 5  # journal events either side of the anchor in a problem message


def problems(
    report: TeardownReport, lost_at_most: int = 0, barrier: BarrierExpectation = "complete"
) -> list[str]:
    """One readable paragraph per thing that went wrong; empty when the teardown is clean."""
    out: list[str] = []
    unexplained = report.unexplained
    if len(unexplained) > lost_at_most:
        budget = f" (at most {lost_at_most} allowed)" if lost_at_most else ""
        for key, group in _grouped(unexplained).items():
            out.append(_loss_problem(report, key, group, budget))
    for key, dups in _grouped(report.duplicates).items():
        out.append(_duplicate_problem(report, key, dups))
    for key, moved in _grouped(report.order_violations).items():
        out.append(_order_problem(report, key, moved))
    for key, extra in _grouped(report.unexpected).items():
        out.append(_unexpected_problem(report, key, extra))
    for f in report.findings:
        out.append(_finding_problem(report, f))
    out.extend(_barrier_problems(report, barrier))
    return out


def failure_message(report: TeardownReport, problems: Sequence[str]) -> str:
    """What `assert_clean` raises: the problems (the first few in full), the seed to rerun
    with, and the losses a rule allowed."""
    seed = (
        f"seed {report.seed}; rerun with --meshlog-seed {report.seed}"
        if report.seed is not None
        else "no seed"
    )
    n = len(problems)
    parts = [
        f"meshlog teardown is not clean: {n} problem{'s' * (n != 1)} ({seed}), judged under "
        f"the {report.rules} rules"
    ]
    for i, text in enumerate(problems[:_MAX_SHOWN], 1):
        parts.append(f"{i}) {text}")
    if n > _MAX_SHOWN:
        parts.append(
            f"... and {n - _MAX_SHOWN} more: "
            + "; ".join(p.splitlines()[0] for p in problems[_MAX_SHOWN:])
        )
    allowed = Counter((x.rank, x.stream, x.where, x.rule) for x in report.lost if x.rule)
    if allowed:
        parts.append(
            "allowed losses (not counted): "
            + "; ".join(
                f"rank {r} {s} {w}: {n} line{'s' * (n != 1)} ({rule})"
                for (r, s, w, rule), n in sorted(allowed.items())
            )
        )
    return "\n".join(parts)


def _lines(
    report: TeardownReport, rank: int, stream: Stream, where: Where
) -> tuple[Sequence[bytes], Sequence[bytes]]:
    for r in report.evidence.ranks:
        for s in r.streams:
            if s.rank == rank and s.stream == stream:
                got = s.delivered if where == "client" else (s.file_lines or ())
                return s.emitted, got
    return (), ()


def _title(report: TeardownReport, rank: int, stream: Stream) -> str:
    for r in report.evidence.ranks:
        if r.rank == rank and r.unanswered:
            return f"rank {rank} {stream} (end unknown: {r.unanswered})"
        if r.rank == rank and r.crashed:
            how = f"signal {r.exit_signal}" if r.exit_signal else f"exit {r.exit_code}"
            return f"rank {rank} {stream} (crashed: {how})"
    return f"rank {rank} {stream}"


def _context(
    report: TeardownReport, rank: int, stream: Stream, where: Where, center: int
) -> list[str]:
    emitted, got = _lines(report, rank, stream, where)
    match = report.matches.get((rank, stream, where))
    if match is None:
        return []
    lo, hi = center - _CONTEXT, center + _CONTEXT + 1
    rules = {
        x.index: x.rule
        for x in report.lost
        if (x.rank, x.stream, x.where) == (rank, stream, where) and lo <= x.index < hi
    }
    rows = [f"  --- emitted ({len(emitted)} lines)", f"  +++ {_DEST[where]} ({len(got)} lines)"]
    rows += _hunk(emitted, got, match, center, rules)
    if where == "client" and report.evidence.aggregated:
        rows.append(
            "  (aggregated: only counts are compared; the missing lines are"
            " presumed to be the last ones)"
        )
    return rows


def _timeline_near(
    report: TeardownReport, rank: int | None, stream: Stream | None, t: float | None
) -> str:
    if not report.journal:
        return "  timeline: (journal is empty)"
    if t is None and rank is not None:
        t = blame_time(report.journal, rank, stream)
    if t is None:  # nothing specific to centre on: show how teardown ended
        t = float(report.journal[-1]["t"])
    body = timeline_text(report.journal, around=t, width=_TIMELINE_WIDTH, rank=rank)
    return "  timeline (ms since the first journal event):\n" + body


def _loss_problem(report: TeardownReport, key: _Key, group: list[Loss], budget: str) -> str:
    rank, stream, where = key
    emitted, _ = _lines(report, rank, stream, where)
    first = group[0]
    tail = " (the final partial line)" if _is_partial(report, rank, stream, first.index) else ""
    n = len(group)
    head = (
        f"{_title(report, rank, stream)}: {n} of {len(emitted)} emitted lines "
        f"never reached the {_DEST[where]}, unexplained{budget}"
    )
    rows = [head, f"  first missing: #{first.index} {_show(first.line)}{tail}"]
    if first.crash is not None:
        rows.append("  " + crash_text(first.crash))
    if n > 1:
        rows.append("  missing: " + _ranges([x.index for x in group]))
    rows += _context(report, rank, stream, where, first.index)
    rows.append(_timeline_near(report, rank, stream, None))
    return "\n".join(rows)


def crash_text(crash: CrashLoss) -> str:
    """How a crashed rank's lost client tail was judged, in one sentence."""
    span = f"lines {crash.first}-{crash.last}" if crash.lines > 1 else f"line {crash.first}"
    if crash.rules == "strict":
        return (
            f"{span} lost after a crash ({crash.lines} line{'s' * (crash.lines != 1)}); "
            "the strict rules allow no crash loss of what reached the pipe"
        )
    n = crash.batches
    return (
        f"{span} lost after a crash: {n} batch{'es' * (n != 1)} of {crash.batch_lines}; the "
        f"literal rule allows the last one (lines {crash.allowed_from}-{crash.last}), so "
        f"{crash.excess} line{'s' * (crash.excess != 1)} before line {crash.allowed_from} "
        "are unexplained"
    )


def _duplicate_problem(report: TeardownReport, key: _Key, dups: list[Duplicate]) -> str:
    rank, stream, where = key
    d = dups[0]
    rows = [
        f"{_title(report, rank, stream)}: {len(dups)} duplicate line{'s' * (len(dups) != 1)} "
        f"at the {_DEST[where]}",
        f"  first: @{d.position} {_show(d.line)} repeats #{d.index}",
    ]
    rows += _context(report, rank, stream, where, _emitted_near(report, key, d.position))
    return "\n".join(rows)


def _order_problem(report: TeardownReport, key: _Key, moved: list[OrderViolation]) -> str:
    rank, stream, where = key
    v = moved[0]
    early, late = sorted((v.index, v.crossed))
    rows = [
        f"{_title(report, rank, stream)}: {len(moved)} line{'s' * (len(moved) != 1)} out of "
        f"order at the {_DEST[where]} (order is guaranteed per rank and stream)",
        f"  first: #{v.index} {_show(v.line)} arrived at @{v.position}; "
        f"#{early} was emitted before #{late} but arrived after it",
    ]
    rows += _context(report, rank, stream, where, v.index)
    return "\n".join(rows)


def _unexpected_problem(report: TeardownReport, key: _Key, extra: list[Unexpected]) -> str:
    rank, stream, where = key
    u = extra[0]
    rows = [
        f"{_title(report, rank, stream)}: {len(extra)} line{'s' * (len(extra) != 1)} at the "
        f"{_DEST[where]} that this rank never emitted on {stream}",
        f"  first: @{u.position} {_show(u.line)}{_emitted_elsewhere(report, u.line)}",
    ]
    rows += _context(report, rank, stream, where, _emitted_near(report, key, u.position))
    return "\n".join(rows)


def _finding_problem(report: TeardownReport, f: Finding) -> str:
    where = _title(report, f.rank, f.stream) + ": " if f.rank is not None and f.stream else ""
    if f.rank is None and f.t is None:
        return f"{where}{f.message}"
    return f"{where}{f.message}\n{_timeline_near(report, f.rank, f.stream, f.t)}"


def _barrier_problems(report: TeardownReport, expect: BarrierExpectation) -> list[str]:
    out: list[str] = []
    if not report.barriers and report.evidence.barrier_expected:
        out.append("no barrier ran: stop() must flush before stopping the children")
    completed = [b.version for b in report.barriers if b.completed]
    for b in report.barriers:
        if b.status == "timeout" and not b.missing_ranks:
            out.append(f"barrier v{b.version} timed out without naming the missing ranks")
        elif (
            b.status == "timeout"
            and expect == "complete"
            and not _all_crashed(report, b.missing_ranks)
        ):
            out.append(
                f"barrier v{b.version} timed out after {b.latency_s:.2f} s: "
                f"rank{'s' * (len(b.missing_ranks) != 1)} "
                f"{', '.join(map(str, b.missing_ranks))} never acked "
                f"(acked: {', '.join(map(str, b.acked_ranks)) or 'none'})"
                + "\n"
                + _timeline_near(report, None, None, _journal_time(report, b.version))
            )
        elif b.status == "completed" and b.missing_ranks:
            out.append(
                f"barrier v{b.version} reported completion with rank"
                f"{'s' * (len(b.missing_ranks) != 1)} {', '.join(map(str, b.missing_ranks))}"
                " still missing: a barrier completes only when every expected rank acked"
            )
        elif b.status == "superseded" and not any(v > b.version for v in completed):
            out.append(f"barrier v{b.version} was superseded but no later barrier completed")
    if expect == "timeout" and not any(b.status == "timeout" for b in report.barriers):
        out.append(
            f"expected a barrier to time out, but none did "
            f"({len(completed)} of {len(report.barriers)} completed)"
        )
    return out


def _all_crashed(report: TeardownReport, ranks: Sequence[int]) -> bool:
    """A crashed child never acks: a barrier that timed out only on such ranks ended as
    SPEC 1.11 requires (by its deadline, naming them)."""
    crashed = {r.rank for r in report.evidence.ranks if r.crashed}
    return bool(ranks) and all(r in crashed for r in ranks)


def _journal_time(report: TeardownReport, version: int) -> float | None:
    """When barrier `version` timed out, else when it started (None: not journaled)."""
    times = {
        e.get("ev"): float(e["t"])
        for e in report.journal
        if e.get("version") == version and e.get("src") == "driver"
    }
    return times.get(Ev.BARRIER_TIMEOUT, times.get(Ev.BARRIER_STARTED))


def _is_partial(report: TeardownReport, rank: int, stream: Stream, index: int) -> bool:
    for r in report.evidence.ranks:
        for s in r.streams:
            if s.rank == rank and s.stream == stream:
                return s.ends_with_partial and index == len(s.emitted) - 1
    return False


def _emitted_near(report: TeardownReport, key: _Key, position: int) -> int:
    """The emitted index whose neighbourhood shows delivered position `position`."""
    match = report.matches[key]
    if position < match.head:
        return position
    if position >= match.n_delivered - match.tail:
        return position - match.n_delivered + match.n_emitted
    before = [i for i, p in match.in_order.items() if p < position]
    return max(before, default=match.head - 1) + 1


def _emitted_elsewhere(report: TeardownReport, line: bytes) -> str:
    for r in report.evidence.ranks:
        for s in r.streams:
            if line in s.emitted:
                return f" (emitted by rank {s.rank} on {s.stream}: misrouted?)"
    return ""


_DEST: dict[str, str] = {"client": "client", "file": "per-proc file"}
_Key = tuple[int, "Stream", "Where"]


_T = TypeVar("_T", "Loss", "Duplicate", "OrderViolation", "Unexpected")


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
