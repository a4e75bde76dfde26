"""What a barrier and a stop tell their caller: typed values, not prose.

`BarrierOutcome` is the one barrier result (the harness re-exports it as
`pytest_meshlog.report.BarrierResult`); `StopProblem` is one thing a backend's `stop()` saw
go wrong, its kind one of `StopProblemKind`, its ranks and streams fields. A consumer
decides by `kind`, never by reading the message; `message` is for people.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

BarrierStatus = Literal["completed", "superseded", "timeout"]
"""How a barrier ended: every caller gets one of these (SPEC 1.11)."""

NotWaited = Literal["exited", "finished", "disconnected", "never_connected"]
"""Why a barrier did not wait for a rank: its child had exited; its forwarder had said Bye
(its final lines were relayed); its forwarder's connection was gone; or it never had one."""


@dataclass(frozen=True)
class BarrierOutcome:
    """The answer one barrier caller got; every caller gets one (SPEC 1.11)."""

    version: int
    status: BarrierStatus
    acked_ranks: tuple[int, ...] = ()
    missing_ranks: tuple[int, ...] = ()
    """Expected ranks that did not ack (by the deadline, or before a newer barrier)."""
    latency_s: float = 0.0
    not_waited: Mapping[int, NotWaited] = field(default_factory=dict)
    """Ranks of the mesh not waited for, and why: `exited` (the child had ended),
    `finished` (its forwarder had relayed its final lines and said Bye), `disconnected`,
    `never_connected`."""
    expected: tuple[int, ...] = ()
    """The ranks the barrier waited for when it started."""
    lost_ranks: tuple[int, ...] = ()
    """Expected, but their forwarder's connection ended during the barrier (dropped from it)."""

    @property
    def completed(self) -> bool:
        return self.status == "completed"


StopProblemKind = Literal[
    "barrier_incomplete",
    "host_lost",
    "host_unanswered",
    "tails_unconfirmed",
    "teardown_failed",
    "backend_output",
]
"""What went wrong during a stop:

* `barrier_incomplete`: the pre-stop barrier did not complete (`ranks`: the missing ones;
  the barrier itself is in `StopOutcome.barrier`, where a consumer judges it);
* `host_lost`: a host went away, or sent a bad frame, while stopping its `ranks`;
* `host_unanswered`: a host did not answer within the stop deadline and was killed then;
  how its `ranks` ended is unknown;
* `tails_unconfirmed`: `ranks` exited cleanly (code 0) yet their forwarder never said Bye,
  so nobody confirmed their final lines were relayed;
* `teardown_failed`: a backend's own teardown step failed (e.g. a helper did not shut down);
* `backend_output`: what a backend printed cannot be accounted for (`streams` names where).
"""


@dataclass(frozen=True)
class StopProblem:
    """One thing `stop()` saw go wrong; `detail` is what the backend knows beyond the kind."""

    kind: StopProblemKind
    ranks: tuple[int, ...] = ()
    streams: tuple[str, ...] = ()
    host: int | None = None
    detail: str = ""

    @property
    def message(self) -> str:
        """The problem in words, for a report."""
        if self.kind == "barrier_incomplete":
            return f"pre-stop barrier {self.detail}: missing ranks {list(self.ranks)}"
        if self.kind == "tails_unconfirmed":
            return (
                f"ranks {list(self.ranks)} exited cleanly without confirming that their final "
                "lines were relayed (no Bye from their forwarder)"
            )
        return self.detail

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class ExitInfo:
    """How a child ended: its exit code or signal, and why the stack ended it (if it did)."""

    code: int | None
    signal: int | None
    killed_by_stack: str | None = None


@dataclass(frozen=True)
class PipeHolder:
    """A process that held a child's stream open after the child let go of it (a
    descendant of the child); the host ended it so the tee could see EOF."""

    rank: int
    stream: str
    pid: int
    cmdline: str


@dataclass
class StopOutcome:
    """What `stop()` saw: the pre-stop barrier, exits, peek tails, files, and problems."""

    barrier: BarrierOutcome | None
    """None only from a backend that has no barrier at all (its `unsupported("barrier")`
    says why); the reference stack always runs one."""
    exits: dict[int, ExitInfo]
    tails: dict[int, dict[str, list[str]]]
    files: list[str]
    unconfirmed_ranks: tuple[int, ...]
    problems: list[StopProblem]
    unconfirmed_clean_exits: tuple[int, ...]
    duration_s: float
    pipe_holders: tuple[PipeHolder, ...] = ()
    unanswered_ranks: tuple[int, ...] = ()
    """Ranks whose host did not answer `stop` within its deadline (frozen or overloaded):
    how they ended is unknown, which is not a crash; the host was killed at the deadline."""


class MeshError(RuntimeError):
    """The mesh could not do what was asked within its deadline; says what was waited for."""
