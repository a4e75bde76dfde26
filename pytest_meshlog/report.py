"""What a mesh left behind after teardown, and how a report explains itself (SPEC 3.2).

Report types are what `pytest_meshlog.oracle.evaluate` concludes from the evidence the
harness gathered once a mesh stopped (its types live in `evidence_model.py`, beside the
gathering in `evidence.py`, and are re-exported here). `TeardownReport` is data plus a small
API (lookups, `problems`, `assert_clean`, `summary`, `timeline`); the text of a problem is
rendered by `explain.py` from the report alone, without re-running the oracle.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from . import explain
from .evidence_model import (
    RULES,
    BarrierResult,
    BarrierStatus,
    MeshEvidence,
    RankEvidence,
    Rules,
    Stream,
    StreamEvidence,
)
from .journal_view import timeline_text

__all__ = [  # the evidence types stay importable from here, where users found them
    "RULES",
    "RULE_CRASH",
    "RULE_FILE_DEADLINE",
    "RULE_FILE_ERROR",
    "RULE_STREAMING_OFF",
    "BarrierExpectation",
    "BarrierResult",
    "BarrierStatus",
    "CrashLoss",
    "Duplicate",
    "Finding",
    "Loss",
    "MeshEvidence",
    "OrderViolation",
    "RankEvidence",
    "Rules",
    "Stream",
    "StreamEvidence",
    "StreamMatch",
    "StreamReport",
    "TeardownReport",
    "Unexpected",
    "Where",
]

Where = Literal["client", "file"]
BarrierExpectation = Literal["complete", "timeout"]

RULE_CRASH = "crash-last-batch"
"""A crashed rank (or one whose channel closed early) may lose the last batch of each of its
client streams (SPEC 1.5: "you may miss the very last batch for that proc"); at the strict
level it may lose nothing that reached the pipe."""
RULE_STREAMING_OFF = "streaming-off"
"""With stream_to_client off the client gets nothing by design (SPEC 1.6)."""
RULE_FILE_ERROR = "file-write-error"  # the rank's host journaled failed writes to that file
RULE_FILE_DEADLINE = "file-close-deadline"
"""File lines of a host's stream whose writer was still writing (a slow disk) at the close
deadline and was cancelled (journal `file_writer_timed_out`). Explained, not excused: the
timed-out writer is a finding of its own (kind `file-close-deadline`), which fails the test."""

# --------------------------------------------------------------------------- findings


@dataclass(frozen=True, slots=True)
class CrashLoss:
    """The lines a crashed rank's client stream lost at its end (emitted lines `first` to
    `last`), judged at level `rules`: at `literal` the rule allows the last `batch_lines`
    of them (from `allowed_from` on), at `strict` none (`allowed_from` is past `last`).
    `batch_lines` is None when the stack did not say its batch size (then all are allowed)."""

    first: int
    last: int
    rules: Rules
    batch_lines: int | None
    allowed_from: int

    @property
    def lines(self) -> int:
        return self.last - self.first + 1

    @property
    def batches(self) -> int | None:
        """How many batches of `batch_lines` the lost lines fill (None: size unknown)."""
        if not self.batch_lines:
            return None
        return -(-self.lines // self.batch_lines)

    @property
    def excess(self) -> int:
        """Lines lost beyond what the rule allows."""
        return max(0, min(self.allowed_from, self.last + 1) - self.first)


@dataclass(frozen=True, slots=True)
class Loss:
    """An emitted line that never reached `where`; `rule` names what allows it (None: nothing).
    `crash` is set on the lines of a crashed rank's lost client tail (allowed or not)."""

    rank: int
    stream: Stream
    index: int
    line: bytes
    where: Where
    rule: str | None
    crash: CrashLoss | None = None

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
    def rules(self) -> Rules:
        """The level this report judged crash losses at (`literal` or `strict`)."""
        return self.evidence.rules

    @property
    def crash_losses(self) -> tuple[tuple[int, Stream, CrashLoss], ...]:
        """Per crashed rank and client stream that lost its tail: how it was judged."""
        seen: dict[tuple[int, Stream], CrashLoss] = {}
        for x in self.lost:
            if x.crash is not None:
                seen.setdefault((x.rank, x.stream), x.crash)
        return tuple((r, s, c) for (r, s), c in seen.items())

    @property
    def unexplained(self) -> tuple[Loss, ...]:
        return tuple(loss for loss in self.lost if loss.rule is None)

    # ---- verdict

    def problems(
        self, lost_at_most: int = 0, barrier: BarrierExpectation = "complete"
    ) -> list[str]:
        """One readable paragraph per thing that went wrong; empty when the teardown is clean."""
        return explain.problems(self, lost_at_most=lost_at_most, barrier=barrier)

    def assert_clean(self, lost_at_most: int = 0, barrier: BarrierExpectation = "complete") -> None:
        """Raise AssertionError explaining every problem; mirrors the `meshlog_expect` marker."""
        problems = self.problems(lost_at_most=lost_at_most, barrier=barrier)
        if problems:
            raise AssertionError(explain.failure_message(self, problems))

    def summary(self) -> dict[str, Any]:
        """Numbers for a terminal summary or an export hook; JSON-serialisable."""
        by_rule = Counter(x.rule or "unexplained" for x in self.lost)
        latencies = [b.latency_s for b in self.barriers if b.completed]
        partial = [s.partial_line_forwarded for s in self.streams]
        return {
            "seed": self.seed,
            "rules": self.rules,
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
        return timeline_text(self.journal, around=around, width=width, rank=rank)
