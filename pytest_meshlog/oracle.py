"""The oracle: judge a stopped mesh's evidence against the teardown rules (SPEC 1.10, 3.5).

Pure logic, no processes: every line a fake child writes is known in advance, so each
destination is compared with what was emitted, per rank and per stream only (SPEC 1.10:
nothing is promised across streams or ranks). A loss is allowed only when a documented rule
explains it; the journal is checked for the per-stream EOF rules.

Matching is linear when the streams agree or one is a prefix of the other (a crash); only
the differing middle is aligned, by difflib when small and by hashing otherwise.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Mapping, Sequence
from difflib import SequenceMatcher
from typing import Any

from .evidence_model import MeshEvidence, RankEvidence, Stream, StreamEvidence
from .lines import Lines, as_lines
from .report import (
    RULE_CRASH,
    RULE_FILE_DEADLINE,
    RULE_FILE_ERROR,
    RULE_STREAMING_OFF,
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

_DIFF_LIMIT = 2_000
"""Middles up to this many lines a side are aligned by difflib (best with repeated lines,
quadratic at worst); larger ones pair each line with its next unused emitted occurrence."""

_TERMINAL = ("barrier_completed", "barrier_superseded", "barrier_timeout")


def evaluate(evidence: MeshEvidence) -> TeardownReport:
    """Turn the evidence of one stopped mesh into its TeardownReport."""
    journal = tuple(sorted(evidence.journal, key=lambda e: float(e["t"])))
    facts = _JournalFacts(journal)
    lost: list[Loss] = []
    dups: list[Duplicate] = []
    moved: list[OrderViolation] = []
    extra: list[Unexpected] = []
    findings: list[Finding] = []
    streams: list[StreamReport] = []
    matches: dict[tuple[int, Stream, Where], StreamMatch] = {}
    failed_files = {e.get("stream") for e in journal if e.get("ev") == "file_write_error"}
    too_slow = _timed_out_writers(journal)
    if not facts.has_host_events and evidence.journal_expected:
        findings.append(
            Finding(
                "journal",
                "the journal has no host events, so the EOF, Flush(None) and partial-line"
                " rules could not be checked",
            )
        )
    for rank in evidence.ranks:
        for s in rank.streams:
            client = (
                count_match(len(s.emitted), len(s.delivered))
                if evidence.aggregated
                else match_lines(s.emitted, s.delivered)
            )
            matches[(s.rank, s.stream, "client")] = client
            outcome: list[tuple[StreamMatch, Sequence[bytes], Where]] = [
                (client, s.delivered, "client")
            ]
            file = None
            if s.file_lines is not None:
                file = match_lines(s.emitted, s.file_lines)
                matches[(s.rank, s.stream, "file")] = file
                outcome.append((file, s.file_lines, "file"))
            for m, got, where in outcome:
                rule = (
                    _client_rule(evidence, rank)
                    if where == "client"
                    else _file_rule(s, failed_files, too_slow)
                )
                lost += _losses(s, m, where, rule)
                dups += (
                    Duplicate(s.rank, s.stream, where, p, i, got[p])
                    for p, i in sorted(m.duplicates.items())
                )
                moved += _order_violations(s, m, where)
                extra += (Unexpected(s.rank, s.stream, where, p, got[p]) for p in m.unexpected)
            partial = _partial_forwarded(evidence, s, client, file, facts, findings)
            flushes, eof = _eof_rules(s, facts, findings)
            console = _console(s, facts, findings)
            streams.append(
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
    findings += _file_findings(evidence)
    findings += _orphaned_barriers(journal)
    findings += _writer_findings(journal)
    findings += [Finding("stop", problem.message) for problem in evidence.stop_problems]
    return TeardownReport(
        seed=evidence.seed,
        streams=tuple(streams),
        lost=tuple(lost),
        duplicates=tuple(dups),
        order_violations=tuple(moved),
        unexpected=tuple(extra),
        findings=tuple(findings),
        barriers=evidence.barriers,
        files_expected=evidence.files_expected,
        files=evidence.files,
        files_gate_reason=evidence.files_gate_reason,
        journal=journal,
        evidence=evidence,
        matches=matches,
    )


# --------------------------------------------------------------------------- matching


def match_lines(emitted: Sequence[bytes], delivered: Sequence[bytes]) -> StreamMatch:
    """Align what a destination received with what was emitted, in O(n) when they agree."""
    emitted, delivered = _comparable(emitted, delivered)
    ne, nd = len(emitted), len(delivered)
    if isinstance(emitted, Lines) and isinstance(delivered, Lines):
        head = emitted.common_prefix(delivered)  # on the blobs: no line objects
        tail = emitted.common_suffix(delivered, min(ne, nd) - head)
    else:
        head = _common_prefix(emitted, delivered)
        tail = _common_suffix(emitted, delivered, min(ne, nd) - head)
    mid_e, mid_d = range(head, ne - tail), range(head, nd - tail)
    if not mid_e and not mid_d:
        return StreamMatch(ne, nd, head, tail, last_delivered=ne - 1)
    pairs = sorted(_pair(emitted, delivered, mid_e, mid_d).items())  # (@, #) by arrival
    keep = _longest_increasing([i for _, i in pairs])
    in_order = {i: p for k, (p, i) in enumerate(pairs) if k in keep}
    moved = {i: p for k, (p, i) in enumerate(pairs) if k not in keep}
    paired_e = {i for _, i in pairs}
    paired_d = {p for p, _ in pairs}
    spare = [p for p in mid_d if p not in paired_d]
    first_seen = _first_indices(emitted, {delivered[p] for p in spare})
    duplicates = {p: first_seen[delivered[p]] for p in spare if delivered[p] in first_seen}
    unexpected = [p for p in spare if delivered[p] not in first_seen]
    last = max(head - 1, max(paired_e, default=-1), ne - 1 if tail else -1)
    return StreamMatch(
        ne,
        nd,
        head,
        tail,
        in_order=in_order,
        moved=moved,
        duplicates=duplicates,
        unexpected=unexpected,
        lost=[i for i in mid_e if i not in paired_e],
        last_delivered=last,
    )


def _comparable(
    emitted: Sequence[bytes], delivered: Sequence[bytes]
) -> tuple[Sequence[bytes], Sequence[bytes]]:
    """Both as `Lines` when one is (and the other's lines hold no newline), else both as
    tuples: either way their slices compare equal when their lines do."""
    if isinstance(emitted, Lines) or isinstance(delivered, Lines):
        try:
            return as_lines(emitted), as_lines(delivered)
        except ValueError:  # a line with a newline in it: only a tuple can hold it
            pass
    return tuple(emitted), tuple(delivered)


def count_match(n_emitted: int, n_delivered: int) -> StreamMatch:
    """Aggregated mode: only counts are known, so a shortfall is presumed to be the last lines."""
    head = min(n_emitted, n_delivered)
    return StreamMatch(
        n_emitted,
        n_delivered,
        head,
        0,
        unexpected=range(n_emitted, n_delivered),
        lost=range(n_delivered, n_emitted),
        last_delivered=head - 1,
    )


def _common_prefix(a: Sequence[bytes], b: Sequence[bytes]) -> int:
    """Length of the common prefix by halving slice comparisons: O(n) work, all in C."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while hi - lo > 1:  # a[:lo] == b[:lo] and a[lo:hi] != b[lo:hi]
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _common_suffix(a: Sequence[bytes], b: Sequence[bytes], limit: int) -> int:
    """Length of the common suffix, at most `limit`, the same way as `_common_prefix`."""
    na, nb = len(a), len(b)
    if limit <= 0:
        return 0
    if a[na - limit :] == b[nb - limit :]:
        return limit
    lo, hi = 0, limit  # the last lo lines agree; the last hi do not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[na - mid : na - lo] == b[nb - mid : nb - lo]:
            lo = mid
        else:
            hi = mid
    return lo


def _pair(
    emitted: Sequence[bytes], delivered: Sequence[bytes], mid_e: range, mid_d: range
) -> dict[int, int]:
    """Pair each delivered middle line (@) with an emitted middle line (#) of equal content."""
    pairs: dict[int, int] = {}
    if not mid_e or not mid_d:
        return pairs
    if len(mid_e) <= _DIFF_LIMIT and len(mid_d) <= _DIFF_LIMIT:
        e = emitted[mid_e.start : mid_e.stop]
        d = delivered[mid_d.start : mid_d.stop]
        for a, b, size in SequenceMatcher(None, e, d, autojunk=False).get_matching_blocks():
            for k in range(size):
                pairs[mid_d.start + b + k] = mid_e.start + a + k
        taken = set(pairs.values())
        candidates: Sequence[int] = [i for i in mid_e if i not in taken]
    else:
        candidates = mid_e
    # Unpaired lines take the next unused emitted occurrence of their content. Repeats are
    # rare, so the first occurrence is kept as a plain int and only repeats get a queue.
    first: dict[bytes, int] = {}
    repeats: dict[bytes, deque[int]] = {}
    for i in candidates:
        line = emitted[i]
        if line in first:
            repeats.setdefault(line, deque()).append(i)
        else:
            first[line] = i
    for p in mid_d:
        if p in pairs:
            continue
        line = delivered[p]
        i = first.pop(line, -1)
        if i < 0 and (more := repeats.get(line)):
            i = more.popleft()
        if i >= 0:
            pairs[p] = i
    return pairs


def _longest_increasing(values: Sequence[int]) -> set[int]:
    """Positions in `values` of one longest strictly increasing subsequence (O(n log n))."""
    tails: list[int] = []  # smallest last value of an increasing run of each length
    ends: list[int] = []  # position holding that value
    back = [-1] * len(values)
    for k, v in enumerate(values):
        j = bisect_left(tails, v)
        if j:
            back[k] = ends[j - 1]
        if j == len(tails):
            tails.append(v)
            ends.append(k)
        else:
            tails[j], ends[j] = v, k
    keep: set[int] = set()
    k = ends[-1] if ends else -1
    while k >= 0:
        keep.add(k)
        k = back[k]
    return keep


def _first_indices(emitted: Sequence[bytes], wanted: set[bytes]) -> dict[bytes, int]:
    found: dict[bytes, int] = {}
    if wanted:
        for i, line in enumerate(emitted):
            if line in wanted and line not in found:
                found[line] = i
    return found


# --------------------------------------------------------------------------- rules


def _client_rule(evidence: MeshEvidence, rank: RankEvidence) -> str | None:
    if not evidence.stream_to_client:
        return RULE_STREAMING_OFF
    return RULE_CRASH if rank.crashed else None


def _losses(s: StreamEvidence, m: StreamMatch, where: Where, rule: str | None) -> list[Loss]:
    """Classify each undelivered line: a crash allows only the suffix after the last arrival."""
    out = []
    for i in m.lost:
        allowed = rule if rule != RULE_CRASH or i > m.last_delivered else None
        out.append(Loss(s.rank, s.stream, i, s.emitted[i], where, allowed))
    return out


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


def _partial_forwarded(
    evidence: MeshEvidence,
    s: StreamEvidence,
    client: StreamMatch,
    file: StreamMatch | None,
    facts: _JournalFacts,
    findings: list[Finding],
) -> bool | None:
    """Whether the final partial line reached every destination that should have it.

    A tail missing at a destination is already a Loss there (allowed or not), so only a tail
    that no destination can vouch for becomes a finding of its own.
    """
    if not s.ends_with_partial or not s.emitted:
        return None
    tail = len(s.emitted) - 1
    checks = []
    if evidence.stream_to_client:
        checks.append(not (client.lost and client.lost[-1] == tail))
    if file is not None:
        checks.append(not (file.lost and file.lost[-1] == tail))
    if checks:
        return all(checks)
    if facts.count("partial_forwarded", s.rank, s.stream):
        return True
    if facts.has_host_events:
        findings.append(
            Finding(
                "partial-line",
                f"the final partial line {s.emitted[-1]!r} was not forwarded "
                "(no partial_forwarded event, and no client or file to check)",
                s.rank,
                s.stream,
                facts.time("eof", s.rank, s.stream),
            )
        )
    return False


def _eof_rules(
    s: StreamEvidence, facts: _JournalFacts, findings: list[Finding]
) -> tuple[int, bool]:
    """The tee must see EOF and then post Flush(None) exactly once (SPEC 1.3)."""
    posted = facts.flush_none(s.rank, s.stream)
    eof = facts.eof(s.rank, s.stream)
    if not facts.has_host_events:
        return posted, eof
    if not eof:
        findings.append(
            Finding(
                "eof",
                "the tee never saw EOF (did stop abort it while bytes were still in the pipe?)",
                s.rank,
                s.stream,
                facts.time("abort", s.rank, s.stream),
            )
        )
    elif posted != 1:
        findings.append(
            Finding(
                "flush-none",
                f"Flush(None) was posted {posted} times at EOF (expected exactly once)",
                s.rank,
                s.stream,
                facts.time("eof", s.rank, s.stream),
            )
        )
    return posted, eof


def _console(s: StreamEvidence, facts: _JournalFacts, findings: list[Finding]) -> int | None:
    """The console tee writes every raw byte before framing, so the counts must match."""
    console = s.console_bytes
    if console is None:
        console = facts.console_bytes(s.rank, s.stream)
    if console is not None and console != s.emitted_bytes:
        findings.append(
            Finding(
                "console",
                f"the console tee wrote {console} bytes but the child wrote {s.emitted_bytes}",
                s.rank,
                s.stream,
                facts.time("eof", s.rank, s.stream),
            )
        )
    return console


def _file_findings(evidence: MeshEvidence) -> list[Finding]:
    reason = f" ({evidence.files_gate_reason})" if evidence.files_gate_reason else ""
    if evidence.files_expected and not evidence.files:
        return [Finding("files", f"per-proc files were expected but none were created{reason}")]
    if not evidence.files_expected and evidence.files:
        return [
            Finding(
                "files",
                f"per-proc files were created although the file gate is off{reason}: "
                + ", ".join(evidence.files),
            )
        ]
    return []


def _file_rule(s: StreamEvidence, failed: set[Any], too_slow: set[tuple[int, str]]) -> str | None:
    if s.stream in failed:
        return RULE_FILE_ERROR
    if (s.rank, s.stream) in too_slow:
        return RULE_FILE_DEADLINE
    return None


def _host_ranks(journal: Sequence[Mapping[str, Any]]) -> dict[str, set[int]]:
    """host journal source ("host0") -> the ranks it spawned."""
    out: dict[str, set[int]] = {}
    for e in journal:
        if e.get("ev") == "child_spawned" and isinstance(e.get("rank"), int):
            out.setdefault(str(e.get("src")), set()).add(int(e["rank"]))
    return out


def _timed_out_writers(journal: Sequence[Mapping[str, Any]]) -> set[tuple[int, str]]:
    """(rank, stream) whose host's file writer for that stream was cancelled at close."""
    ranks = _host_ranks(journal)
    return {
        (rank, str(e.get("stream")))
        for e in journal
        if e.get("ev") == "file_writer_timed_out"
        for rank in ranks.get(str(e.get("src")), ())
    }


def _writer_findings(journal: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """A file writer cancelled at the close deadline: named when the host says which one
    was still writing (a slow disk); otherwise its stop signal was missed. A stream queue
    above its bound: the writer did not hold the tees (no backpressure)."""
    out: list[Finding] = []
    named = {str(e.get("src")) for e in journal if e.get("ev") == "file_writer_timed_out"}
    for e in journal:
        ev, src, t = e.get("ev"), str(e.get("src")), float(e["t"])
        if ev == "file_writer_timed_out":
            delay = float(e.get("write_delay_s") or 0.0)
            injected = f"; the test made every batch {delay:g} s slower" if delay else ""
            out.append(
                Finding(
                    "file-close-deadline",
                    f"{src}'s {e.get('stream')} file writer ({e.get('path')}) was still "
                    f"writing at the close deadline ({e.get('timeout_s')} s): "
                    f"{e.get('unwritten_lines')} posted lines were never written after "
                    f"{e.get('lines_written')}; its slowest batch took "
                    f"{float(e.get('slowest_batch_s') or 0.0):.3f} s (a slow disk{injected})",
                    stream=e.get("stream"),
                    t=t,
                )
            )
        elif ev == "file_appender_closed":
            if e.get("timed_out") and src not in named:
                out.append(
                    Finding(
                        "files",
                        "the file appender's writers did not finish by the close deadline: "
                        "the stop signal was missed (lost wake-up?) and lines still queued "
                        "may be gone",
                        t=t,
                    )
                )
            peaks, bounds = e.get("peak_queued_bytes"), e.get("queue_bound_bytes")
            if isinstance(peaks, Mapping) and isinstance(bounds, Mapping):
                for stream, peak in sorted(peaks.items()):
                    bound = bounds.get(stream)
                    if isinstance(bound, int) and isinstance(peak, int) and peak > bound:
                        out.append(
                            Finding(
                                "file-queue",
                                f"{src}'s {stream} file queue held {peak} bytes, above its "
                                f"bound of {bound}: the file writer did not hold the tees "
                                "(no backpressure), so a slow disk grows the host instead "
                                "of slowing the children",
                                stream=stream,
                                t=t,
                            )
                        )
    return out


def _orphaned_barriers(journal: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """Every started barrier must end: completed, superseded or timed out (SPEC 1.11)."""
    started = {e.get("version"): float(e["t"]) for e in journal if e.get("ev") == "barrier_started"}
    for e in journal:
        if e.get("ev") in _TERMINAL:
            started.pop(e.get("version"), None)
    return [
        Finding("barrier", f"barrier v{v} started but its caller never got an answer", t=t)
        for v, t in started.items()
    ]


class _JournalFacts:
    """Per rank-and-stream event counts, indexed once so every stream's check is O(1)."""

    def __init__(self, journal: Sequence[Mapping[str, Any]]) -> None:
        self._counts: dict[tuple[str, int, str], int] = {}
        self._first: dict[tuple[str, int, str], float] = {}
        self._console: dict[tuple[int, str], int] = {}
        self._eof_by_abort: set[tuple[int, str]] = set()
        self.has_host_events = False
        for e in journal:
            name, rank, stream = str(e.get("ev")), e.get("rank"), str(e.get("stream"))
            self.has_host_events |= str(e.get("src", "")).startswith("host")
            if not isinstance(rank, int):
                continue
            key = (name, rank, stream)
            self._counts[key] = self._counts.get(key, 0) + 1
            self._first.setdefault(key, float(e["t"]))
            if name == "console_bytes":
                self._console[(rank, stream)] = self._console.get((rank, stream), 0) + int(
                    e.get("bytes", 0)
                )
            if name == "abort" and e.get("eof"):
                self._eof_by_abort.add((rank, stream))

    def count(self, name: str, rank: int, stream: str) -> int:
        return self._counts.get((name, rank, stream), 0)

    def time(self, name: str, rank: int, stream: str) -> float | None:
        return self._first.get((name, rank, stream))

    def flush_none(self, rank: int, stream: str) -> int:
        return self.count("flush_none_posted", rank, stream)

    def eof(self, rank: int, stream: str) -> bool:
        return bool(self.count("eof", rank, stream)) or (rank, stream) in self._eof_by_abort

    def console_bytes(self, rank: int, stream: str) -> int | None:
        return self._console.get((rank, stream))
