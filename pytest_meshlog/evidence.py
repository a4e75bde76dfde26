"""Gathering the evidence of one stopped mesh for the oracle.

What the children wrote comes from their scripts and progress records (fake_procs);
what the stack did comes from the client's record, the per-proc files and the journal.
The two sides never share framing code: the oracle's expectations are computed by
fake_procs' own implementation of the tee rules.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fake_procs import Script, emitted, expected_lines, final_partial, find_tag, progress_path

from .backend import MeshClient
from .report import BarrierResult, MeshEvidence, RankEvidence, Stream, StreamEvidence
from .stack import ExitInfo
from .stack.client import BarrierOutcome

STREAMS: tuple[Stream, Stream] = ("stdout", "stderr")


def barrier_result(outcome: BarrierOutcome) -> BarrierResult:
    return BarrierResult(
        outcome.version,
        outcome.status,  # type: ignore[arg-type]  # one of the three statuses the client sets
        outcome.acked_ranks,
        outcome.missing_ranks,
        outcome.latency_s,
        dict(outcome.not_waited),
    )


def died_abruptly(info: ExitInfo | None) -> bool:
    """A child that did not end through a clean quiesce (crash step, signal, kill)."""
    if info is None:
        return True
    if info.killed_by_stack is not None:
        return True
    return info.signal is not None or (info.code not in (0, None))


def file_lines_by_rank(
    files: Sequence[str],
    expected: dict[tuple[int, Stream], tuple[bytes, ...]],
    prefix_with_rank: bool,
) -> dict[tuple[int, Stream], list[bytes]]:
    """Attribute every line of the per-host files to a rank: by its `[rank] ` prefix, else
    by its fake_procs tag, else by whose expected lines hold it (else rank 0, where the
    oracle reports it as a line nobody emitted)."""
    out: dict[tuple[int, Stream], list[bytes]] = {key: [] for key in expected}
    owners = _Owners(expected)
    for path in files:
        stream: Stream = "stdout" if path.endswith(".stdout") else "stderr"
        data = Path(path).read_bytes() if Path(path).exists() else b""
        for line in data.split(b"\n")[:-1]:
            found = _rank_of(line, prefix_with_rank)
            rank = owners.take(stream, line, out) if found is None else found
            out.setdefault((rank, stream), []).append(line)
    return out


class _Owners:
    """Who emitted an untagged line. When several ranks on one host emitted identical
    lines, their copies interleave in the host's file in any order: each copy goes to the
    rank it brings closest to its next expected line, so a correct file never looks out
    of order. A copy nobody is owed goes to its first owner (a duplicate), or to rank 0
    when nobody emitted it."""

    def __init__(self, expected: dict[tuple[int, Stream], tuple[bytes, ...]]) -> None:
        self.at: dict[tuple[Stream, bytes], dict[int, list[int]]] = {}
        for (rank, stream), lines in expected.items():
            for index, line in enumerate(lines):
                self.at.setdefault((stream, line), {}).setdefault(rank, []).append(index)
        self.paid: dict[tuple[Stream, bytes, int], int] = {}

    def take(
        self, stream: Stream, line: bytes, so_far: dict[tuple[int, Stream], list[bytes]]
    ) -> int:
        where = self.at.get((stream, line))
        if not where:
            return 0
        best: tuple[int, int] | None = None  # (gap to the next expected copy, rank)
        for rank, indices in where.items():
            if self.paid.get((stream, line, rank), 0) >= len(indices):
                continue  # every copy this rank emitted is already accounted for
            cursor = len(so_far.get((rank, stream), ()))
            nxt = bisect_left(indices, cursor)
            gap = indices[nxt] - cursor if nxt < len(indices) else cursor - indices[-1]
            best = min(best, (gap, rank)) if best is not None else (gap, rank)
        rank = best[1] if best is not None else next(iter(where))
        key = (stream, line, rank)
        self.paid[key] = self.paid.get(key, 0) + 1
        return rank


def _rank_of(line: bytes, prefix_with_rank: bool) -> int | None:
    if prefix_with_rank:
        if line.startswith(b"["):
            end = line.find(b"] ")
            if end > 1 and line[1:end].isdigit():
                return int(line[1:end])
        return None
    tag = find_tag(line)
    return tag.rank if tag is not None else None


def eof_bytes(journal: Sequence[dict[str, Any]], rank: int, stream: str) -> int | None:
    for e in journal:
        if e["ev"] == "eof" and e.get("rank") == rank and e.get("stream") == stream:
            return int(e["bytes"])
    return None


def _settle(em: Any, stream: Stream, seen: int | None) -> bytes:
    """A write cut short by a kill from outside reached the pipe only in part: count it
    as emitted exactly as far as the pipe shows, never beyond what the record claims."""
    full: bytes = em.streams[stream]
    low: bytes = em.at_least(stream)
    if seen is None or seen >= len(full):
        return full
    return full[: max(seen, len(low))]


def console_bytes(journal: Sequence[dict[str, Any]]) -> dict[tuple[int, Stream], int]:
    return {(e["rank"], e["stream"]): e["bytes"] for e in journal if e["ev"] == "console_bytes"}


def gather(
    client: MeshClient,
    scripts: Sequence[Script],
    *,
    seed: int | None,
    prefix_with_rank: bool,
    stream_to_client: bool,
    aggregated: bool,
    files: Sequence[str],
    barriers: Sequence[BarrierOutcome],
    faulted_ranks: frozenset[int] = frozenset(),
    stop_problems: Sequence[str] = (),
) -> MeshEvidence:
    journal = client.read_journal()
    gate = client.config.file_log_gate()
    tee = console_bytes(journal)
    raw: dict[tuple[int, Stream], bytes] = {}
    expected: dict[tuple[int, Stream], tuple[bytes, ...]] = {}
    abrupt: set[int] = set()  # ranks whose script ended by an exit or crash step
    for rank, script in enumerate(scripts):
        record = Path(progress_path(client.record_dir, rank))
        wrote: dict[Stream, bytes] = {}
        if record.exists():
            em = emitted(script, rank, record)
            wrote = dict(em.streams)
            if em.progress.ending in ("exit", "crash"):  # os._exit / a signal: no quiesce
                abrupt.add(rank)
            if em.uncertain is not None:  # killed from outside in the middle of a write
                wrote[em.uncertain.stream] = _settle(
                    em, em.uncertain.stream, eof_bytes(journal, rank, em.uncertain.stream)
                )
        for stream in STREAMS:
            raw[rank, stream] = data = wrote.get(stream, b"")
            expected[rank, stream] = tuple(
                expected_lines(data, rank=rank, prefix_with_rank=prefix_with_rank)
            )
    in_files = file_lines_by_rank(files, expected, prefix_with_rank) if gate is None else None
    rank_evidence = []
    unanswered: dict[int, str] = dict(getattr(client, "unanswered", None) or {})
    delivered = client.delivered  # once: a backend may compute it from its output files
    for rank in range(len(scripts)):
        exit_info = client.exits.get(rank)
        streams = []
        for stream in STREAMS:
            data = raw[rank, stream]
            streams.append(
                StreamEvidence(
                    rank=rank,
                    stream=stream,
                    emitted=expected[rank, stream],
                    ends_with_partial=final_partial(
                        data, rank=rank, prefix_with_rank=prefix_with_rank
                    )
                    is not None,
                    emitted_bytes=len(data),
                    delivered=tuple(delivered.get((rank, stream), ())),
                    file_lines=None
                    if in_files is None
                    else tuple(in_files.get((rank, stream), ())),
                    console_bytes=tee.get((rank, stream)),
                )
            )
        rank_evidence.append(
            RankEvidence(
                rank=rank,
                exit_code=exit_info.code if exit_info else None,
                exit_signal=exit_info.signal if exit_info else None,
                crashed=(died_abruptly(exit_info) and rank not in unanswered)
                or rank in faulted_ranks
                or rank in abrupt,
                streams=(streams[0], streams[1]),
                unanswered=unanswered.get(rank) if exit_info is None else None,
            )
        )
    return MeshEvidence(
        seed=seed,
        ranks=tuple(rank_evidence),
        journal=tuple(journal),
        barriers=tuple(barrier_result(b) for b in barriers),
        stream_to_client=stream_to_client,
        aggregated=aggregated,
        files_expected=gate is None,
        files=tuple(files),
        files_gate_reason=gate,
        stop_problems=tuple(stop_problems),
        journal_expected=bool(getattr(client, "has_journal", True)),
    )


def abrupt_ranks(evidence: MeshEvidence) -> frozenset[int]:
    return frozenset(r.rank for r in evidence.ranks if r.crashed)
