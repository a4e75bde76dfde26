"""The oracle's journal rules, per stream and per mesh: EOF and exactly one Flush(None)
(SPEC 1.3), the final partial line, the console byte count, per-proc files and their
writers, and that every barrier ended (SPEC 1.11). `JournalFacts` indexes the journal once
so each stream's check is O(1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .evidence_model import MeshEvidence, StreamEvidence
from .report import RULE_FILE_DEADLINE, RULE_FILE_ERROR, Finding, StreamMatch
from .stack import Ev

_TERMINAL = (Ev.BARRIER_COMPLETED, Ev.BARRIER_SUPERSEDED, Ev.BARRIER_TIMEOUT)


def partial_forwarded(
    evidence: MeshEvidence,
    s: StreamEvidence,
    client: StreamMatch,
    file: StreamMatch | None,
    facts: JournalFacts,
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
    if facts.count(Ev.PARTIAL_FORWARDED, s.rank, s.stream):
        return True
    if facts.has_host_events:
        findings.append(
            Finding(
                "partial-line",
                f"the final partial line {s.emitted[-1]!r} was not forwarded "
                "(no partial_forwarded event, and no client or file to check)",
                s.rank,
                s.stream,
                facts.time(Ev.EOF, s.rank, s.stream),
            )
        )
    return False


def eof_rules(s: StreamEvidence, facts: JournalFacts, findings: list[Finding]) -> tuple[int, bool]:
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
                facts.time(Ev.ABORT, s.rank, s.stream),
            )
        )
    elif posted != 1:
        findings.append(
            Finding(
                "flush-none",
                f"Flush(None) was posted {posted} times at EOF (expected exactly once)",
                s.rank,
                s.stream,
                facts.time(Ev.EOF, s.rank, s.stream),
            )
        )
    return posted, eof


def console_check(s: StreamEvidence, facts: JournalFacts, findings: list[Finding]) -> int | None:
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
                facts.time(Ev.EOF, s.rank, s.stream),
            )
        )
    return console


def print_findings(journal: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """Output the driver's client received and its sink failed to print: the lines count
    as delivered (they reached the client), but its user never saw them."""
    failed: dict[int, Mapping[str, Any]] = {}
    for e in journal:
        if e["ev"] == Ev.SINK_FAILED_TOTAL or (
            e["ev"] == Ev.SINK_FAILED and e["target"] not in failed
        ):
            failed[e["target"]] = e
    return [
        Finding(
            "client-print",
            f"the driver's client failed to print {e['bytes']} bytes to "
            f"{('stdout', 'stderr')[target]} in {e.get('writes', 1)} write"
            f"{'s' * (e.get('writes', 1) != 1)} ({e['error']}): lines it received never "
            "reached its output",
            t=float(e["t"]),
        )
        for target, e in sorted(failed.items())
    ]


def file_findings(evidence: MeshEvidence) -> list[Finding]:
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
    return [  # read as empty, its lines would all read as lost, with no word of why
        Finding(
            "files",
            f"the per-proc file {path} is gone: created, then removed before the mesh was "
            "judged (was its log dir deleted?), so none of its lines can be checked",
        )
        for path in evidence.files_gone
    ]


def file_rule(
    s: StreamEvidence, failed: set[tuple[int, str]], too_slow: set[tuple[int, str]]
) -> str | None:
    """The rule that explains the stream's file losses, if any: each is keyed by (rank,
    stream), so a host's trouble never excuses the file of a rank on another host."""
    if (s.rank, s.stream) in failed:
        return RULE_FILE_ERROR
    if (s.rank, s.stream) in too_slow:
        return RULE_FILE_DEADLINE
    return None


def _host_ranks(journal: Sequence[Mapping[str, Any]]) -> dict[str, set[int]]:
    """host journal source ("host0") -> the ranks it spawned."""
    out: dict[str, set[int]] = {}
    for e in journal:
        if e.get("ev") == Ev.CHILD_SPAWNED and isinstance(e.get("rank"), int):
            out.setdefault(str(e.get("src")), set()).add(int(e["rank"]))
    return out


def timed_out_writers(journal: Sequence[Mapping[str, Any]]) -> set[tuple[int, str]]:
    """(rank, stream) whose host's file writer for that stream was cancelled at close."""
    return _host_streams(journal, Ev.FILE_WRITER_TIMED_OUT)


def failed_writers(journal: Sequence[Mapping[str, Any]]) -> set[tuple[int, str]]:
    """(rank, stream) whose host journaled a failed write to that stream's file. A host
    writes only its own ranks' lines to its own files, so its errors explain nothing in
    another host's file (that host journaled no error: its losses are unexplained)."""
    return _host_streams(journal, Ev.FILE_WRITE_ERROR)


def _host_streams(journal: Sequence[Mapping[str, Any]], ev: Ev) -> set[tuple[int, str]]:
    """(rank, stream) for every `ev` a host journaled about one stream's file: the ranks
    that host spawned, whose lines go to that file."""
    ranks = _host_ranks(journal)
    return {
        (rank, str(e.get("stream")))
        for e in journal
        if e.get("ev") == ev
        for rank in ranks.get(str(e.get("src")), ())
    }


def writer_findings(journal: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """A file writer cancelled at the close deadline: named when the host says which one
    was still writing (a slow disk); otherwise its stop signal was missed. A stream queue
    above its bound: the writer did not hold the tees (no backpressure)."""
    out: list[Finding] = []
    named = {str(e.get("src")) for e in journal if e.get("ev") == Ev.FILE_WRITER_TIMED_OUT}
    for e in journal:
        ev, src, t = e.get("ev"), str(e.get("src")), float(e["t"])
        if ev == Ev.FILE_WRITER_TIMED_OUT:
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
        elif ev == Ev.FILE_APPENDER_CLOSED:
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


def orphaned_barriers(journal: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """Every started barrier must end: completed, superseded or timed out (SPEC 1.11)."""
    started = {
        e.get("version"): float(e["t"]) for e in journal if e.get("ev") == Ev.BARRIER_STARTED
    }
    for e in journal:
        if e.get("ev") in _TERMINAL:
            started.pop(e.get("version"), None)
    return [
        Finding("barrier", f"barrier v{v} started but its caller never got an answer", t=t)
        for v, t in started.items()
    ]


class JournalFacts:
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
            if name == Ev.CONSOLE_BYTES:
                self._console[(rank, stream)] = self._console.get((rank, stream), 0) + int(
                    e.get("bytes", 0)
                )
            if name == Ev.ABORT and e.get("eof"):  # the field: the abort saw EOF
                self._eof_by_abort.add((rank, stream))

    def count(self, name: str, rank: int, stream: str) -> int:
        return self._counts.get((name, rank, stream), 0)

    def time(self, name: str, rank: int, stream: str) -> float | None:
        return self._first.get((name, rank, stream))

    def flush_none(self, rank: int, stream: str) -> int:
        return self.count(Ev.FLUSH_NONE_POSTED, rank, stream)

    def eof(self, rank: int, stream: str) -> bool:
        return bool(self.count(Ev.EOF, rank, stream)) or (rank, stream) in self._eof_by_abort

    def console_bytes(self, rank: int, stream: str) -> int | None:
        return self._console.get((rank, stream))
