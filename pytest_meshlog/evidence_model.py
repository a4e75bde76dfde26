"""The evidence model: what the harness gathers once a mesh stopped (`evidence.gather`)
and the oracle judges (`oracle.evaluate`). Plain frozen data, importing nothing of the
harness (the barrier result is the stack's `BarrierOutcome`); `report.py` re-exports it
for users.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .stack import BarrierOutcome, BarrierStatus, StopProblem

BarrierResult = BarrierOutcome
"""The answer one barrier caller got (the stack's own result type, SPEC 1.11)."""

Stream = Literal["stdout", "stderr"]
Rules = Literal["literal", "strict"]
"""How strictly a crash's losses are judged: `literal` (the seed's rule: at most the last
batch of each client stream of a crashed rank), `strict` (no crash loss at all)."""
RULES: tuple[Rules, ...] = ("literal", "strict")
__all__ = [
    "RULES",
    "BarrierResult",
    "BarrierStatus",
    "MeshEvidence",
    "RankEvidence",
    "Rules",
    "Stream",
    "StreamEvidence",
]


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
    files_gone: tuple[str, ...] = ()
    """Files of `files` that no longer existed when the evidence was gathered (removed
    during the run): read as empty, their lines cannot be checked."""
    files_gate_reason: str | None = None
    stop_problems: tuple[StopProblem, ...] = ()  # what the stack's own stop() saw go wrong
    journal_expected: bool = True  # False: the backend keeps no journal (rules not checkable)
    rules: Rules = "literal"
    """The level a crash's client losses are judged at (`Rules`)."""
    batch_lines: int | None = None
    """Lines per batch of the stack (a MeshClient's `batch_lines`, else the plan's
    read_log_buffer); None: unknown, and then a crash may lose any suffix (literal level)."""
    barrier_expected: bool = True  # False: the backend has no barrier (stop cannot flush)
