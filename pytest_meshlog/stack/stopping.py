"""How a `LoggingMeshClient` stops its mesh: barrier first, then quiesce and stop the
children host by host, wait for their forwarders' Bye, then shut the hosts down, all by
one deadline (a host that does not answer by it is killed then, and its ranks' end is
unknown)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .hosts import HostLink
from .journal import Ev, read_journal
from .outcomes import ExitInfo, MeshError, PipeHolder, StopOutcome, StopProblem

if TYPE_CHECKING:
    from .mesh_client import LoggingMeshClient


HOST_SHARE = 0.8
"""The share of what is left of the stop deadline that a host gets for its own stop (no
floor: a floor past the deadline made a well-behaved host miss it, reported unanswered)."""


@dataclass
class _Answers:
    """What the hosts answered to `stop`, and which did not answer."""

    tails: dict[int, dict[str, list[str]]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    holders: list[PipeHolder] = field(default_factory=list)
    silent: list[HostLink] = field(default_factory=list)
    problems: list[StopProblem] = field(default_factory=list)


async def stop_mesh(mesh: LoggingMeshClient, timeout: float) -> StopOutcome:
    t0 = time.monotonic()
    deadline = t0 + timeout
    mesh.journal(Ev.STOP_BEGIN, timeout_s=timeout, deadline=deadline)
    problems: list[StopProblem] = []
    barrier = await mesh.barrier(min(timeout * 0.3, 5.0))
    if not barrier.completed:
        detail = f"v{barrier.version} {barrier.status}"
        problems.append(StopProblem("barrier_incomplete", barrier.missing_ranks, detail=detail))
    for host in mesh.host_links:  # its own deadline comes first: the rest is for its answer
        host.send(("stop", max(0.0, (deadline - time.monotonic()) * HOST_SHARE)))
    answers = await _collect_answers(mesh, deadline, timeout)
    problems += answers.problems
    client = mesh.client
    if mesh.config.enable_log_forwarding:
        await client.wait_until(
            lambda: all(
                r in client.said_bye or r in client.lost or r not in client.forwarders
                for r in mesh.ranks
            ),
            deadline,  # a deadline is a deadline: no grace after it
        )
    client.read_unread()  # what reached this process is delivered, paused or not
    client.settle()  # every host answered (its fallback came before its answer)
    unconfirmed = tuple(r for r in mesh.ranks if r not in client.said_bye)
    clean = tuple(r for r in unconfirmed if _exited_cleanly(mesh.exits.get(r)))
    if mesh.config.enable_log_forwarding and clean:
        problems.append(StopProblem("tails_unconfirmed", clean))
    client.print_aggregates()
    for host in mesh.host_links:
        host.send(("shutdown",))
    for host in mesh.host_links:  # one that answered gets a moment to exit; a silent one not
        grace = 0.0 if host in answers.silent else 1.0
        await host.reap(max(time.monotonic() + grace, deadline))
    mesh.journal(Ev.STOP_END)
    return StopOutcome(
        barrier=barrier,
        exits=dict(mesh.exits),
        tails=answers.tails,
        files=answers.files,
        unconfirmed_ranks=unconfirmed,
        problems=problems,
        unconfirmed_clean_exits=clean,
        duration_s=time.monotonic() - t0,
        pipe_holders=tuple(answers.holders),
        unanswered_ranks=tuple(sorted(mesh.unanswered)),
    )


async def _collect_answers(mesh: LoggingMeshClient, deadline: float, timeout: float) -> _Answers:
    answers = _Answers()
    for host in mesh.host_links:
        try:
            msg = await _stopped_reply(host, deadline)
        except MeshError as exc:
            ranks = tuple(host.ranks)
            answers.files += _journaled_files(mesh, host)
            if host.proc.poll() is not None:  # it died: that is not a missed deadline
                answers.problems.append(
                    StopProblem("host_lost", ranks, host=host.index, detail=str(exc))
                )
                continue
            answers.silent.append(host)
            why = f"host{host.index} did not answer within the stop deadline ({timeout:g} s)"
            for rank in host.ranks:
                if rank not in mesh.exits:
                    mesh.unanswered[rank] = why
            detail = f"{why}; it was killed at the deadline ({exc})"
            answers.problems.append(
                StopProblem("host_unanswered", ranks, host=host.index, detail=detail)
            )
            continue
        _take_answer(mesh, msg[1], answers)
    return answers


async def _stopped_reply(host: HostLink, deadline: float) -> list[Any]:
    """The host's answer to `stop`, past replies to earlier requests that nobody waited
    for any more (a spawn given up at its deadline)."""
    while True:
        msg = await host.next_reply(deadline, f"host{host.index} to stop ranks {host.ranks}")
        if msg[0] == "stopped":
            return msg


def _take_answer(mesh: LoggingMeshClient, result: dict[str, Any], answers: _Answers) -> None:
    for rank, (code, sig, killed) in result["exits"].items():
        mesh.exits[int(rank)] = ExitInfo(code, sig, killed)
    answers.tails.update({int(r): t for r, t in result["tails"].items()})
    answers.files.extend(result["files"])
    answers.holders += (
        PipeHolder(int(h["rank"]), str(h["stream"]), int(h["pid"]), str(h["cmdline"]))
        for h in result.get("held", ())
    )


def _journaled_files(mesh: LoggingMeshClient, host: HostLink) -> list[str]:
    """The per-proc files a host that gave no answer created, from its own journal
    (`file_appender_created`): they hold what it wrote before it froze or died, so they
    are read and judged like any other host's, not left out as if never created."""
    return sorted(
        {
            str(path)
            for e in read_journal(mesh.journal_dir, f"host{host.index}")
            if e.get("ev") == Ev.FILE_APPENDER_CREATED
            for path in e.get("files") or ()
        }
    )


def _exited_cleanly(info: ExitInfo | None) -> bool:
    return info is not None and info.code == 0 and info.signal is None and not info.killed_by_stack
