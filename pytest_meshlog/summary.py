"""The teardown summary printed at the end of a `pytest --meshlog` run (SPEC 3.1).

A `ReportEntry` is one mesh of one test. Under pytest-xdist the workers hand entries to the
controller as JSON (report properties), so an entry carries a light, plain-data copy of
what the summary and the HTML report need, and both render from that copy alone; the full
`TeardownReport` is optional and never crosses a process boundary.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from .report import BarrierExpectation, TeardownReport
from .stack import Ev

MAX_JOURNAL_EVENTS = 2_000
"""Journal events kept per mesh in the light form: enough for any catalog scenario's
teardown, small enough that a flood test does not make the xdist channel or the HTML huge."""

# Chatty events go first when the journal must be cut, problems last: what a person needs
# to see in the timeline is when things ended and what went wrong, not every ack.
_CHATTY = frozenset(
    {
        Ev.AGGREGATE_PRINTED,
        Ev.BARRIER_ACKED,
        Ev.CONSOLE_BYTES,
        Ev.FORWARDER_CONNECTED,
        Ev.FORWARDER_STARTED,
        Ev.SENDER_CONNECTED,
        Ev.SENDER_CLOSED,
    }
)
_KEY = frozenset(
    {
        Ev.BARRIER_STARTED,
        Ev.BARRIER_COMPLETED,
        Ev.BARRIER_SUPERSEDED,
        Ev.BARRIER_TIMEOUT,
        Ev.STOP_BEGIN,
        Ev.STOP_END,
        Ev.EOF,
        Ev.PARTIAL_FORWARDED,
        Ev.FLUSH_NONE_POSTED,
        Ev.CHILD_EXITED,
        Ev.CHILD_KILLED,
        Ev.FORWARDER_LOST,
        Ev.SEND_SKIPPED,
        Ev.ABORT,
        Ev.FILE_WRITE_ERROR,
        Ev.SENDER_FAILED,
        Ev.FORWARDER_FAILED,
        Ev.TAILS_MISSING,
        Ev.QUIESCE_INCOMPLETE,
    }
)

_OUTCOMES = ("passed", "failed", "error", "skipped")


@dataclass(frozen=True)
class ReportEntry:
    """One mesh of one test, as the summary and the HTML report see it.

    Built with `report=`, the light fields (`numbers`, `streams`, `ranks`, `problems`,
    `files`, `journal`) are filled from it; `from_dict` rebuilds an entry from them alone.
    `lost_at_most` and `barrier_expect` mirror the test's `meshlog_expect` marker so the
    problems listed are the ones the test was judged by.
    """

    nodeid: str
    outcome: str  # "passed" | "failed" | "skipped" | "error"
    stack: str
    seed: int | None
    procs: int
    teardown_s: float  # how long stop() took
    report: TeardownReport | None = field(default=None, compare=False, repr=False)
    lost_at_most: int = 0
    barrier_expect: BarrierExpectation = "complete"
    numbers: dict[str, Any] = field(default_factory=dict, hash=False)  # report.summary()
    streams: list[dict[str, Any]] = field(default_factory=list, hash=False, repr=False)
    ranks: list[dict[str, Any]] = field(default_factory=list, hash=False, repr=False)
    problems: list[str] = field(default_factory=list, hash=False, repr=False)
    files: list[str] = field(default_factory=list, hash=False, repr=False)
    journal: list[dict[str, Any]] = field(default_factory=list, hash=False, repr=False)
    journal_total: int = 0  # events before the cut; len(journal) when nothing was cut

    def __post_init__(self) -> None:
        if self.report is None or self.numbers:
            return
        light = _light(self.report, self.lost_at_most, self.barrier_expect)
        for name, value in light.items():
            object.__setattr__(self, name, value)

    @property
    def journal_cut(self) -> int:
        """Journal events left out of the light form."""
        return max(0, self.journal_total - len(self.journal))

    def to_dict(self) -> dict[str, Any]:
        """The light form: JSON types only, no `report`."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "report"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReportEntry:
        """Rebuild from `to_dict()` output (after a JSON round trip); unknown keys are ignored."""
        known = {f.name for f in fields(cls)} - {"report"}
        return cls(**{k: v for k, v in data.items() if k in known})


def _light(
    report: TeardownReport, lost_at_most: int, barrier: BarrierExpectation
) -> dict[str, Any]:
    lost: dict[tuple[int, str], dict[str, Counter[str]]] = {}
    for x in report.lost:
        per_stream = lost.setdefault((x.rank, x.stream), {})
        per_stream.setdefault(x.where, Counter())[x.rule or "unexplained"] += 1
    streams = [
        {
            "rank": s.rank,
            "stream": s.stream,
            "emitted": s.emitted,
            "delivered": s.delivered,
            "in_files": s.in_files,
            "emitted_bytes": s.emitted_bytes,
            "console_bytes": s.console_bytes,
            "lost": {
                where: dict(sorted(rules.items()))
                for where, rules in sorted(lost.get((s.rank, s.stream), {}).items())
            },
            "partial_line_forwarded": s.partial_line_forwarded,
            "flush_none_at_eof": s.flush_none_at_eof,
            "eof_seen": s.eof_seen,
        }
        for s in report.streams
    ]
    ranks = [
        {
            "rank": r.rank,
            "exit_code": r.exit_code,
            "exit_signal": r.exit_signal,
            "crashed": r.crashed,
        }
        for r in report.evidence.ranks
    ]
    journal = [plain(dict(e)) for e in cut_journal(report.journal, MAX_JOURNAL_EVENTS)]
    return {
        "numbers": plain(report.summary()),
        "streams": streams,
        "ranks": ranks,
        "problems": report.problems(lost_at_most=lost_at_most, barrier=barrier),
        "files": list(report.files),
        "journal": journal,
        "journal_total": len(report.journal),
    }


def cut_journal(events: Sequence[Mapping[str, Any]], cap: int) -> list[Mapping[str, Any]]:
    """At most `cap` events, in their order: problems and teardown steps are kept first, then
    ordinary events, then chatty ones; a tier that does not fit keeps its first and last."""
    if len(events) <= cap:
        return list(events)
    tiers: list[list[int]] = [[], [], []]
    for i, e in enumerate(events):
        name = e.get("ev")
        tiers[0 if name in _KEY else 2 if name in _CHATTY else 1].append(i)
    keep: list[int] = []
    for tier in tiers:
        room = cap - len(keep)
        if room <= 0:
            break
        if len(tier) <= room:
            keep += tier
        else:
            head = (room + 1) // 2
            keep += tier[:head] + tier[len(tier) - (room - head) :]
    return [events[i] for i in sorted(keep)]


def plain(value: Any) -> Any:
    """`value` with JSON types only, so an entry survives `json.dumps` and compares equal after
    `json.loads` (tuples become lists, bytes a readable str, other objects their repr)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [plain(v) for v in items]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    return repr(value)


# --------------------------------------------------------------------------- terminal lines


def summary_lines(entries: Sequence[ReportEntry]) -> list[str]:
    """The run's teardown summary, one `label: value` line each, values aligned."""
    if not entries:
        return ["no meshes were spawned"]
    rows: list[tuple[str, str]] = []
    tests = _outcomes_by_test(entries)
    counts = Counter(tests.values())
    outcomes = ", ".join(f"{counts[o]} {o}" for o in _OUTCOMES if counts[o])
    meshes = f", {len(entries):,} meshes" if len(entries) != len(tests) else ""
    rows.append(("scenarios", f"{len(tests):,}{meshes} ({outcomes})"))
    stacks = Counter(e.stack for e in entries)
    rows.append(
        ("stack", ", ".join(f"{s} ({n:,})" if len(stacks) > 1 else s for s, n in stacks.items()))
    )
    seeds = {e.seed for e in entries if e.seed is not None}
    if len(seeds) == 1:
        rows.append(("seed", str(next(iter(seeds)))))
    elif seeds:
        rows.append(("seed", f"{len(seeds):,} different (each failure prints its own)"))
    rows.append(("children", f"{sum(_int(e.numbers, 'ranks', e.procs) for e in entries):,}"))
    levels = Counter(str(e.numbers.get("rules", "literal")) for e in entries)
    rows.append(
        (
            "crash rules",
            ", ".join(f"{r} ({n:,})" if len(levels) > 1 else r for r, n in levels.items()),
        )
    )

    emitted = sum(_int(e.numbers, "lines_emitted") for e in entries)
    delivered = sum(_int(e.numbers, "lines_delivered") for e in entries)
    in_files = sum(_int(e.numbers, "lines_in_files") for e in entries)
    rows.append(("lines emitted", f"{emitted:,}"))
    share = f" ({100.0 * delivered / emitted:.2f} %)" if emitted and delivered != emitted else ""
    rows.append(("lines delivered", f"{delivered:,}{share}"))
    if in_files:
        rows.append(("lines in files", f"{in_files:,}"))
    rows.append(("lost", _losses(entries)))
    other, findings = _other_problems(entries)
    if other:
        rows.append(("other problems", other))
    if findings:
        rows.append(("findings", findings))

    rows += _barrier_rows(entries)
    durations = [e.teardown_s for e in entries]
    slowest = max(entries, key=lambda e: e.teardown_s)
    rows.append(("teardown", f"median {duration_text(statistics.median(durations))}"))
    rows.append(("slowest teardown", f"{duration_text(slowest.teardown_s)} {slowest.nodeid}"))
    culprits = Counter(
        {e.nodeid: _lost(e).get("unexplained", 0) for e in entries if _lost(e).get("unexplained")}
    )
    if culprits:
        worst = culprits.most_common(5)
        more = f", ... ({len(culprits) - 5} more)" if len(culprits) > 5 else ""
        rows.append(("unexplained losses in", ", ".join(f"{n} ({k:,})" for n, k in worst) + more))
    width = max(len(label) for label, _ in rows) + 2
    return [f"{label + ':':<{width}}{value}" for label, value in rows]


def _outcomes_by_test(entries: Iterable[ReportEntry]) -> dict[str, str]:
    """One outcome per test: the worst of its meshes' (a test's meshes normally agree)."""
    rank = {o: i for i, o in enumerate(("failed", "error", "passed", "skipped"))}
    out: dict[str, str] = {}
    for e in entries:
        seen = out.get(e.nodeid)
        if seen is None or rank.get(e.outcome, -1) < rank.get(seen, -1):
            out[e.nodeid] = e.outcome
    return out


def _int(numbers: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = numbers.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _lost(entry: ReportEntry) -> dict[str, int]:
    lost = entry.numbers.get("lost")
    return {str(k): int(v) for k, v in lost.items()} if isinstance(lost, Mapping) else {}


def _losses(entries: Sequence[ReportEntry]) -> str:
    """Losses by rule, allowed ones first and `unexplained` last, where the eye ends."""
    total: Counter[str] = Counter()
    for e in entries:
        total.update(_lost(e))
    if not total:
        return "none"
    order = sorted(total, key=lambda rule: (rule == "unexplained", rule))
    return f"{sum(total.values()):,} (" + ", ".join(f"{r} {total[r]:,}" for r in order) + ")"


def _other_problems(entries: Sequence[ReportEntry]) -> tuple[str, str]:
    """Line problems other than losses, and teardown-rule findings by kind."""
    counts: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for e in entries:
        for key in ("duplicates", "order_violations", "unexpected"):
            counts[key.replace("_", " ")] += _int(e.numbers, key)
        findings = e.numbers.get("findings")
        if isinstance(findings, list):
            kinds.update(str(kind) for kind in findings)
    other = ", ".join(f"{k} {n:,}" for k, n in sorted(counts.items()) if n)
    found = ", ".join(f"{k} {n:,}" for k, n in sorted(kinds.items()))
    return other, f"{sum(kinds.values()):,} ({found})" if kinds else ""


def _barrier_rows(entries: Sequence[ReportEntry]) -> list[tuple[str, str]]:
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    for e in entries:
        barriers = e.numbers.get("barriers")
        for b in barriers if isinstance(barriers, list) else ():
            status = str(b.get("status"))
            statuses[status] += 1
            if status == "completed" and isinstance(b.get("latency_s"), (int, float)):
                latencies.append(float(b["latency_s"]))
    if not statuses:
        return [("barriers", "none recorded")]
    order = sorted(statuses, key=lambda s: (s != "completed", s))
    rows = [
        (
            "barriers",
            f"{sum(statuses.values()):,} ("
            + ", ".join(f"{statuses[s]:,} {s}" for s in order)
            + ")",
        )
    ]
    if latencies:
        rows.append(
            (
                "barrier latency",
                f"median {duration_text(statistics.median(latencies))}, "
                f"max {duration_text(max(latencies))}",
            )
        )
    return rows


def duration_text(seconds: float) -> str:
    """Milliseconds below 0.1 s (barriers), seconds above (teardowns), as the summary shows."""
    if seconds < 0.1:
        return f"{seconds * 1000.0:.1f} ms"
    return f"{seconds:,.2f} s"
