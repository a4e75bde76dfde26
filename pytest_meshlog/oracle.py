"""The oracle: judge a stopped mesh's evidence against the teardown rules (SPEC 1.10, 3.5).

Pure logic, no processes: every line a fake child writes is known in advance, so each
destination is compared with what was emitted, per rank and per stream only (SPEC 1.10:
nothing is promised across streams or ranks). A loss is allowed only when a documented rule
explains it; the journal is checked for the per-stream EOF rules.

This module classifies what `matching.py` found (losses, duplicates, reorderings, strays)
and runs the journal rules of `journal_rules.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .evidence_model import MeshEvidence, RankEvidence, Stream, StreamEvidence
from .journal_rules import (
    JournalFacts,
    console_check,
    eof_rules,
    failed_writers,
    file_findings,
    file_rule,
    orphaned_barriers,
    partial_forwarded,
    print_findings,
    timed_out_writers,
    writer_findings,
)
from .matching import count_match, match_lines
from .report import (
    RULE_CRASH,
    RULE_STREAMING_OFF,
    CrashLoss,
    Duplicate,
    Finding,
    Loss,
    OrderViolation,
    StreamMatch,
    StreamReport,
    TeardownReport,
    Unexpected,
    Where,
)
from .stack import Ev

__all__ = ["count_match", "evaluate", "match_lines"]


@dataclass
class _Verdicts:
    """What the oracle has concluded so far, stream by stream."""

    lost: list[Loss] = field(default_factory=list)
    dups: list[Duplicate] = field(default_factory=list)
    moved: list[OrderViolation] = field(default_factory=list)
    extra: list[Unexpected] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    streams: list[StreamReport] = field(default_factory=list)
    matches: dict[tuple[int, Stream, Where], StreamMatch] = field(default_factory=dict)


def evaluate(evidence: MeshEvidence) -> TeardownReport:
    """Turn the evidence of one stopped mesh into its TeardownReport."""
    journal = tuple(sorted(evidence.journal, key=lambda e: float(e["t"])))
    facts = JournalFacts(journal)
    out = _Verdicts()
    if not facts.has_host_events and evidence.journal_expected:
        out.findings.append(
            Finding(
                "journal",
                "the journal has no host events, so the EOF, Flush(None) and partial-line"
                " rules could not be checked",
            )
        )
    failed = failed_writers(journal)
    too_slow = timed_out_writers(journal)
    for rank in evidence.ranks:
        for s in rank.streams:
            file_rule_s = file_rule(s, failed, too_slow)
            _judge_stream(evidence, rank, s, facts, file_rule_s, out)
    out.findings += file_findings(evidence)
    out.findings += orphaned_barriers(journal)
    out.findings += print_findings(journal)
    out.findings += writer_findings(journal)
    out.findings += _seq_gaps(journal)
    out.findings += [Finding("stop", problem.message) for problem in evidence.stop_problems]
    return TeardownReport(
        seed=evidence.seed,
        streams=tuple(out.streams),
        lost=tuple(out.lost),
        duplicates=tuple(out.dups),
        order_violations=tuple(out.moved),
        unexpected=tuple(out.extra),
        findings=tuple(out.findings),
        barriers=evidence.barriers,
        files_expected=evidence.files_expected,
        files=evidence.files,
        files_gate_reason=evidence.files_gate_reason,
        journal=journal,
        evidence=evidence,
        matches=out.matches,
    )


def _judge_stream(
    evidence: MeshEvidence,
    rank: RankEvidence,
    s: StreamEvidence,
    facts: JournalFacts,
    file_rule_s: str | None,
    out: _Verdicts,
) -> None:
    """Match one stream at each destination, classify the differences, check its rules."""
    client = (
        count_match(len(s.emitted), len(s.delivered))
        if evidence.aggregated
        else match_lines(s.emitted, s.delivered)
    )
    out.matches[(s.rank, s.stream, "client")] = client
    outcome: list[tuple[StreamMatch, Sequence[bytes], Where, str | None]] = [
        (client, s.delivered, "client", _client_rule(evidence, rank))
    ]
    file = None
    if s.file_lines is not None:
        file = match_lines(s.emitted, s.file_lines)
        out.matches[(s.rank, s.stream, "file")] = file
        outcome.append((file, s.file_lines, "file", file_rule_s))
    for m, got, where, rule in outcome:
        out.lost += _losses(s, m, where, rule, evidence)
        out.dups += (
            Duplicate(s.rank, s.stream, where, p, i, got[p])
            for p, i in sorted(m.duplicates.items())
        )
        out.moved += _order_violations(s, m, where)
        out.extra += (Unexpected(s.rank, s.stream, where, p, got[p]) for p in m.unexpected)
    partial = partial_forwarded(evidence, s, client, file, facts, out.findings)
    flushes, eof = eof_rules(s, facts, out.findings)
    console = console_check(s, facts, out.findings)
    out.streams.append(
        StreamReport(
            rank=s.rank,
            stream=s.stream,
            emitted=len(s.emitted),
            delivered=len(s.delivered),
            in_files=None if s.file_lines is None else len(s.file_lines),
            emitted_bytes=s.emitted_bytes,
            console_bytes=console,
            lost_to_client=len(client.lost),
            lost_to_file=len(file.lost) if file else 0,
            partial_line_forwarded=partial,
            flush_none_at_eof=flushes,
            eof_seen=eof,
        )
    )


def _seq_gaps(journal: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """The client kept a batch whose seq skipped lines of its stream (journal `seq_gap`):
    batches were lost between the tee and the client, whichever way they came."""
    return [
        Finding(
            "seq-gap",
            f"rank {e['rank']} {e['stream']}: the client expected the batch starting at line "
            f"{e['expected']} but the next one ({e['via']}) started at line {e['got']}",
            rank=int(e["rank"]),
            stream=e["stream"],
            t=float(e["t"]),
        )
        for e in journal
        if e.get("ev") == Ev.SEQ_GAP
    ]


def _client_rule(evidence: MeshEvidence, rank: RankEvidence) -> str | None:
    if not evidence.stream_to_client:
        return RULE_STREAMING_OFF
    return RULE_CRASH if rank.crashed else None


def _losses(
    s: StreamEvidence, m: StreamMatch, where: Where, rule: str | None, evidence: MeshEvidence
) -> list[Loss]:
    """Classify each undelivered line. A crash explains only lines of the lost tail (after
    the last arrival): at the literal level the last batch of them, at the strict level none."""
    if rule != RULE_CRASH:
        return [Loss(s.rank, s.stream, i, s.emitted[i], where, rule) for i in m.lost]
    crash = _crash_loss(m, evidence)
    out = []
    for i in m.lost:
        if crash is None or i < crash.first:  # not in the tail: nothing explains it
            out.append(Loss(s.rank, s.stream, i, s.emitted[i], where, None))
        else:
            allowed = RULE_CRASH if i >= crash.allowed_from else None
            out.append(Loss(s.rank, s.stream, i, s.emitted[i], where, allowed, crash))
    return out


def _crash_loss(m: StreamMatch, evidence: MeshEvidence) -> CrashLoss | None:
    """The lost tail of a crashed rank's client stream and how much of it the rule allows."""
    first, last = m.last_delivered + 1, m.n_emitted - 1
    if first > last:
        return None
    batch = evidence.batch_lines
    if evidence.rules == "strict":
        allowed_from = last + 1
    elif batch is None:
        allowed_from = first
    else:
        allowed_from = max(first, last + 1 - batch)
    return CrashLoss(first, last, evidence.rules, batch, allowed_from)


def _order_violations(s: StreamEvidence, m: StreamMatch, where: Where) -> list[OrderViolation]:
    """Each moved line, with a line it crossed: a later one that arrived before it, else an
    earlier one that arrived after it."""
    if not m.moved:
        return []
    arrivals = sorted([(p, i) for i, p in (*m.in_order.items(), *m.moved.items())])
    highest = m.head - 1
    seen_max: dict[int, int] = {}
    for p, i in arrivals:
        seen_max[p] = highest
        highest = max(highest, i)
    lowest = m.n_emitted - m.tail if m.tail else m.n_emitted
    seen_min: dict[int, int] = {}
    for p, i in reversed(arrivals):
        seen_min[p] = lowest
        lowest = min(lowest, i)
    out = []
    for i, p in sorted(m.moved.items(), key=lambda x: x[1]):
        crossed = seen_max[p] if seen_max[p] > i else seen_min[p]
        out.append(OrderViolation(s.rank, s.stream, where, p, i, s.emitted[i], crossed))
    return out
