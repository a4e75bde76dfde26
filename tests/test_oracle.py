"""The oracle's verdicts on hand-built evidence: each teardown rule, passing and failing."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest

from pytest_meshlog.oracle import evaluate, match_lines
from pytest_meshlog.report import (
    RULE_CRASH,
    RULE_STREAMING_OFF,
    BarrierResult,
    MeshEvidence,
    RankEvidence,
    Stream,
    StreamEvidence,
    TeardownReport,
)

SEED = 4242


def lines(rank: int, n: int, stream: Stream = "stdout") -> tuple[bytes, ...]:
    return tuple(f"[{rank}] {stream} line {i}".encode() for i in range(n))


def out(
    rank: int,
    emitted: Sequence[bytes],
    delivered: Sequence[bytes] | None = None,
    *,
    stream: Stream = "stdout",
    partial: bool = False,
    files: Sequence[bytes] | None = None,
    console: int | None = None,
) -> StreamEvidence:
    """One stream; delivered defaults to everything emitted."""
    nbytes = sum(len(x) + 1 for x in emitted) - (1 if partial else 0)
    return StreamEvidence(
        rank=rank,
        stream=stream,
        emitted=tuple(emitted),
        ends_with_partial=partial,
        emitted_bytes=nbytes,
        delivered=tuple(emitted if delivered is None else delivered),
        file_lines=None if files is None else tuple(files),
        console_bytes=nbytes if console is None else console,
    )


def rank_ev(
    rank: int,
    stdout: StreamEvidence | None = None,
    stderr: StreamEvidence | None = None,
    *,
    crashed: bool = False,
) -> RankEvidence:
    return RankEvidence(
        rank=rank,
        exit_code=None if crashed else 0,
        exit_signal=9 if crashed else None,
        crashed=crashed,
        streams=(
            stdout or out(rank, lines(rank, 5)),
            stderr or out(rank, lines(rank, 2, "stderr"), stream="stderr"),
        ),
    )


def journal(ranks: Sequence[RankEvidence], flushes: int = 1) -> tuple[dict[str, Any], ...]:
    """A clean teardown's journal: barrier, stop, then per stream EOF, tail, one Flush(None)."""
    ev: list[dict[str, Any]] = [
        {"src": "host0", "ev": "host_started", "host": 0},
        {"src": "driver", "ev": "barrier_started", "version": 1, "expected": len(ranks)},
        {"src": "driver", "ev": "barrier_completed", "version": 1, "latency_s": 0.01},
        {"src": "driver", "ev": "stop_begin"},
    ]
    for r in ranks:
        ev.append({"src": f"rank{r.rank}", "ev": "stop_requested"})
        for s in r.streams:
            ev.append(
                {
                    "src": "host0",
                    "ev": "eof",
                    "rank": r.rank,
                    "stream": s.stream,
                    "bytes": s.emitted_bytes,
                }
            )
            if s.ends_with_partial:
                ev.append(
                    {
                        "src": "host0",
                        "ev": "partial_forwarded",
                        "rank": r.rank,
                        "stream": s.stream,
                        "nbytes": len(s.emitted[-1]),
                    }
                )
            ev += [
                {"src": "host0", "ev": "flush_none_posted", "rank": r.rank, "stream": s.stream}
            ] * flushes
        ev.append(
            {
                "src": "host0",
                "ev": "child_exited",
                "rank": r.rank,
                "code": r.exit_code,
                "signal": r.exit_signal,
            }
        )
    ev.append({"src": "driver", "ev": "stop_end"})
    return tuple({"t": 100.0 + 0.001 * i, **e} for i, e in enumerate(ev))


def mesh(*ranks: RankEvidence, **kw: Any) -> MeshEvidence:
    kw.setdefault("journal", journal(ranks))
    everyone = tuple(r.rank for r in ranks)
    kw.setdefault("barriers", (BarrierResult(1, "completed", everyone, (), 0.01),))
    return MeshEvidence(seed=SEED, ranks=tuple(ranks), **kw)


def failure(report: TeardownReport, **expect: Any) -> str:
    with pytest.raises(AssertionError) as info:
        report.assert_clean(**expect)
    return str(info.value)


def test_clean_evidence_is_clean() -> None:
    report = evaluate(mesh(rank_ev(0), rank_ev(1)))
    assert report.problems() == []
    report.assert_clean()
    assert report.stream(1, "stderr").delivered == 2
    assert report.flush_none_at_eof == {(r, s): 1 for r in (0, 1) for s in ("stdout", "stderr")}
    summary = report.summary()
    assert (summary["lines_emitted"], summary["lines_delivered"], summary["lost"]) == (14, 14, {})


def test_missing_middle_line_is_an_unexplained_loss_with_a_readable_message() -> None:
    emitted = lines(2, 10)
    report = evaluate(mesh(rank_ev(0), rank_ev(2, out(2, emitted, emitted[:5] + emitted[6:]))))
    [loss] = report.lost
    assert (loss.rank, loss.stream, loss.index, loss.line) == (2, "stdout", 5, emitted[5])
    assert (loss.where, loss.rule, loss.allowed) == ("client", None, False)
    msg = failure(report)
    assert "seed 4242" in msg
    assert "rank 2 stdout" in msg
    assert "#5" in msg and "b'[2] stdout line 5'" in msg
    assert "- #5" in msg and "(lost)" in msg  # the diff marks it
    assert "b'[2] stdout line 4'" in msg and "b'[2] stdout line 6'" in msg  # with neighbours
    assert "eof rank=2 stream=stdout" in msg  # and the timeline near it
    assert "ms" in msg


def test_crash_may_lose_a_suffix_of_the_client_stream() -> None:
    emitted = lines(1, 10)
    crashed = rank_ev(1, out(1, emitted, emitted[:7]), crashed=True)
    report = evaluate(mesh(rank_ev(0), crashed))
    assert [(x.index, x.rule) for x in report.lost] == [(i, RULE_CRASH) for i in (7, 8, 9)]
    report.assert_clean()
    assert report.summary()["lost"] == {RULE_CRASH: 3}


def test_crash_does_not_excuse_a_gap_in_the_middle() -> None:
    emitted = lines(1, 10)
    got = emitted[:3] + emitted[4:6]  # #3 missing between arrivals, #6.. a crash suffix
    report = evaluate(mesh(rank_ev(1, out(1, emitted, got), crashed=True)))
    assert [(x.index, x.rule) for x in report.lost] == [
        (3, None),
        (6, RULE_CRASH),
        (7, RULE_CRASH),
        (8, RULE_CRASH),
        (9, RULE_CRASH),
    ]
    msg = failure(report)
    assert "rank 1 stdout (crashed: signal 9): 1 of 10 emitted lines never reached" in msg
    assert "allowed losses (not counted): rank 1 stdout client: 4 lines (crash-last-batch)" in msg
    assert "- #6      b'[1] stdout line 6' (lost; allowed: crash-last-batch)" in msg


def test_files_get_no_crash_allowance() -> None:
    emitted = lines(3, 6)
    stream = out(3, emitted, emitted[:4], files=emitted[:5])
    report = evaluate(
        mesh(
            rank_ev(3, stream, crashed=True),
            files_expected=True,
            files=("monarch_log_h0_x.stdout",),
        )
    )
    assert [(x.where, x.index, x.rule) for x in report.lost] == [
        ("client", 4, RULE_CRASH),
        ("client", 5, RULE_CRASH),
        ("file", 5, None),
    ]
    msg = failure(report)
    assert "never reached the per-proc file" in msg
    assert report.stream(3, "stdout").in_files == 5


def test_duplicate_is_flagged() -> None:
    emitted = lines(0, 6)
    report = evaluate(mesh(rank_ev(0, out(0, emitted, emitted[:3] + emitted[2:]))))
    [dup] = report.duplicates
    assert (dup.index, dup.position) == (2, 3)
    assert report.lost == ()
    assert "1 duplicate line at the client" in failure(report)


def test_reorder_within_a_stream_is_flagged() -> None:
    emitted = lines(0, 8)
    got = (*emitted[:2], emitted[4], emitted[2], emitted[3], *emitted[5:])
    report = evaluate(mesh(rank_ev(0, out(0, emitted, got))))
    [v] = report.order_violations
    assert (v.index, v.position, v.crossed) == (4, 2, 2)
    assert report.lost == () and report.duplicates == ()
    msg = failure(report)
    assert "out of order" in msg and "#2 was emitted before #4 but arrived after it" in msg


def test_cross_stream_and_cross_rank_interleaving_is_never_flagged() -> None:
    # An interleaver: each stream is complete and in order on its own; the journal shows the
    # two streams (and two ranks) finishing in an arbitrary mix.
    ranks = [
        rank_ev(r, out(r, lines(r, 50)), out(r, lines(r, 50, "stderr"), stream="stderr"))
        for r in (0, 1)
    ]
    events = list(journal(ranks))
    events.reverse()  # arrival order across streams is nobody's promise
    report = evaluate(mesh(*ranks, journal=tuple(events)))
    assert report.order_violations == ()
    report.assert_clean()


def test_missing_partial_tail_is_flagged() -> None:
    emitted = (*lines(0, 3), b"[0] no newline at the end")
    report = evaluate(mesh(rank_ev(0, out(0, emitted, emitted[:3], partial=True))))
    assert report.partial_line_forwarded[(0, "stdout")] is False
    assert report.partial_line_forwarded[(0, "stderr")] is None
    msg = failure(report)
    assert "(the final partial line)" in msg and "no newline at the end" in msg


def test_partial_tail_forwarded() -> None:
    emitted = (*lines(0, 3), b"[0] tail")
    report = evaluate(
        mesh(
            rank_ev(0, out(0, emitted, partial=True, files=emitted)),
            files_expected=True,
            files=("f.stdout",),
        )
    )
    assert report.partial_line_forwarded[(0, "stdout")] is True
    report.assert_clean()


def test_crashed_rank_may_lose_its_partial_tail_at_the_client() -> None:
    emitted = (*lines(0, 3), b"[0] cut short")
    report = evaluate(mesh(rank_ev(0, out(0, emitted, emitted[:3], partial=True), crashed=True)))
    assert report.partial_line_forwarded[(0, "stdout")] is False
    report.assert_clean()


def test_partial_tail_with_no_destination_is_judged_by_the_journal() -> None:
    emitted = (*lines(0, 3), b"[0] tail")
    ranks = (rank_ev(0, out(0, emitted, (), partial=True)),)
    forwarded = mesh(*ranks, stream_to_client=False)
    assert evaluate(forwarded).partial_line_forwarded[(0, "stdout")] is True
    silent = tuple(e for e in journal(ranks) if e["ev"] != "partial_forwarded")
    report = evaluate(mesh(*ranks, stream_to_client=False, journal=silent))
    assert "the final partial line b'[0] tail' was not forwarded" in failure(report)


@pytest.mark.parametrize("flushes", [0, 2])
def test_flush_none_must_be_posted_exactly_once_at_eof(flushes: int) -> None:
    ranks = (rank_ev(0),)
    report = evaluate(mesh(*ranks, journal=journal(ranks, flushes=flushes)))
    assert set(report.flush_none_at_eof.values()) == {flushes}
    msg = failure(report)
    assert f"rank 0 stdout: Flush(None) was posted {flushes} times at EOF" in msg


def test_flush_none_skipped_on_a_closed_channel_is_still_the_one_post() -> None:
    # The tee journals flush_none_posted after calling the sender even when the sender skips
    # it (send_skipped what=flush); the skip must not count as a second post.
    ranks = (rank_ev(0, crashed=True),)
    events = []
    for e in journal(ranks):
        if e["ev"] == "flush_none_posted":
            events.append({**e, "ev": "send_skipped", "lines": 0, "what": "flush"})
        events.append(e)
    report = evaluate(mesh(*ranks, journal=tuple(events)))
    assert set(report.flush_none_at_eof.values()) == {1}
    report.assert_clean()


def test_tee_that_never_saw_eof_is_flagged() -> None:
    ranks = (rank_ev(0),)
    events = tuple(e for e in journal(ranks) if not (e["ev"] == "eof" and e["stream"] == "stderr"))
    msg = failure(evaluate(mesh(*ranks, journal=events)))
    assert "rank 0 stderr: the tee never saw EOF" in msg


def test_barrier_timeout_names_the_missing_ranks() -> None:
    timeout = BarrierResult(1, "timeout", acked_ranks=(0, 1, 3), missing_ranks=(2,), latency_s=2.0)
    ranks = [rank_ev(r) for r in range(4)]
    report = evaluate(mesh(*ranks, barriers=(timeout,)))
    assert not timeout.completed
    msg = failure(report)
    assert "barrier v1 timed out after 2.00 s: rank 2 never acked (acked: 0, 1, 3)" in msg
    report.assert_clean(barrier="timeout")
    # Expecting a timeout that never happened is a failure too.
    clean = evaluate(mesh(*ranks))
    assert "expected a barrier to time out, but none did" in failure(clean, barrier="timeout")


def test_barrier_timeout_on_crashed_ranks_only_is_allowed() -> None:
    """SPEC 1.11: a crashed child never acks; the barrier ends by its deadline naming it."""
    timeout = BarrierResult(1, "timeout", acked_ranks=(0,), missing_ranks=(1,), latency_s=2.0)
    ranks = [rank_ev(0), rank_ev(1, crashed=True)]
    assert evaluate(mesh(*ranks, barriers=(timeout,))).problems() == []
    mixed = BarrierResult(1, "timeout", acked_ranks=(), missing_ranks=(0, 1), latency_s=2.0)
    assert "never acked" in failure(evaluate(mesh(*ranks, barriers=(mixed,))))


def test_barrier_completed_with_missing_ranks_is_flagged() -> None:
    early = BarrierResult(1, "completed", acked_ranks=(0,), missing_ranks=(1,), latency_s=0.01)
    msg = failure(evaluate(mesh(rank_ev(0), rank_ev(1), barriers=(early,))))
    assert "reported completion with rank 1 still missing" in msg


def test_superseded_barrier_needs_a_later_completion_and_every_start_an_answer() -> None:
    ranks = (rank_ev(0),)
    first = BarrierResult(1, "superseded", (), (0,), 0.001)
    second = BarrierResult(2, "completed", (0,), (), 0.002)
    evaluate(mesh(*ranks, barriers=(first, second))).assert_clean()
    assert "superseded but no later barrier completed" in failure(
        evaluate(mesh(*ranks, barriers=(first,)))
    )
    orphan = (
        *journal(ranks),
        {"t": 200.0, "src": "driver", "ev": "barrier_started", "version": 7, "expected": 1},
    )
    assert "barrier v7 started but its caller never got an answer" in failure(
        evaluate(mesh(*ranks, journal=orphan))
    )


def test_aggregated_mode_compares_counts_per_stream() -> None:
    emitted = lines(0, 20)
    # the client printed "[20 similar log lines] ..." rows: the harness expands them to counts
    counted = (emitted[0],) * 20
    evaluate(mesh(rank_ev(0, out(0, emitted, counted)), aggregated=True)).assert_clean()
    short = evaluate(mesh(rank_ev(0, out(0, emitted, counted[:18])), aggregated=True))
    assert [x.index for x in short.unexplained] == [18, 19]
    assert "only counts are compared" in failure(short)


def test_streaming_off_delivers_nothing_by_design() -> None:
    emitted = lines(0, 4)
    report = evaluate(
        mesh(
            rank_ev(0, out(0, emitted, (), files=emitted)),
            stream_to_client=False,
            files_expected=True,
            files=("f.stdout",),
        )
    )
    assert {x.rule for x in report.lost if x.stream == "stdout"} == {RULE_STREAMING_OFF}
    report.assert_clean()


def test_console_byte_count_must_match() -> None:
    report = evaluate(mesh(rank_ev(0, out(0, lines(0, 5), console=10))))
    msg = failure(report)
    assert "rank 0 stdout: the console tee wrote 10 bytes but the child wrote 90" in msg


def test_lost_at_most_tolerates_only_unexplained_losses_up_to_the_budget() -> None:
    emitted = lines(0, 10)
    report = evaluate(mesh(rank_ev(0, out(0, emitted, emitted[:2] + emitted[4:]))))
    report.assert_clean(lost_at_most=2)
    assert "(at most 1 allowed)" in failure(report, lost_at_most=1)


def test_unexpected_line_names_where_it_came_from() -> None:
    mine, theirs = lines(0, 4), lines(1, 4)
    report = evaluate(mesh(rank_ev(0, out(0, mine, mine[:2] + theirs[1:2] + mine[2:])), rank_ev(1)))
    [u] = report.unexpected
    assert u.position == 2
    assert "emitted by rank 1 on stdout: misrouted?" in failure(report)


def test_files_gate_is_checked_both_ways() -> None:
    gated = mesh(rank_ev(0), files_expected=False, files_gate_reason="env=local without force")
    assert evaluate(gated).summary()["files_gate_reason"] == "env=local without force"
    evaluate(gated).assert_clean()
    assert "expected but none were created" in failure(
        evaluate(mesh(rank_ev(0), files_expected=True))
    )


def test_match_lines_handles_repeats_and_large_reorders() -> None:
    a, b = b"a", b"b"
    m = match_lines((a, b, a), (b, a))
    assert list(m.lost) == [0] and not m.moved  # the first 'a' went missing, nothing moved
    big = tuple(str(i).encode() for i in range(10_000))
    swapped = big[:100] + big[5000:] + big[100:5000]  # a middle too big for difflib
    m = match_lines(big, swapped)
    assert not m.lost and not m.duplicates
    assert len(m.moved) == 4900


def test_a_million_line_clean_stream() -> None:
    emitted = tuple(b"[0] %d" % i for i in range(1_000_000))
    received = tuple(bytes(bytearray(x)) for x in emitted)  # equal, not identical, objects
    report = evaluate(
        mesh(
            rank_ev(0, out(0, emitted, received, files=received)),
            files_expected=True,
            files=("f.stdout",),
        )
    )
    report.assert_clean()
    assert report.stream(0, "stdout").delivered == 1_000_000


def test_a_million_line_crash_suffix_is_linear() -> None:
    emitted = tuple(b"[0] %d" % i for i in range(1_000_000))
    report = evaluate(mesh(rank_ev(0, out(0, emitted, emitted[:999_900]), crashed=True)))
    assert len(report.lost) == 100
    report.assert_clean()


def test_report_repr_stays_short() -> None:
    report = evaluate(mesh(rank_ev(0)))
    assert len(repr(report)) < 300
    assert "stop_end" in report.timeline()
    assert dataclasses.is_dataclass(report)


# -- the crash rule, literal and strict (issue 15) -------------------------------------------


def crashed_tail(n: int, delivered: int, **kw: Any) -> TeardownReport:
    emitted = lines(0, n)
    return evaluate(mesh(rank_ev(0, out(0, emitted, emitted[:delivered]), crashed=True), **kw))


def test_literal_rule_allows_one_batch_at_the_end() -> None:
    report = crashed_tail(300, 200, batch_lines=100)
    assert report.rules == "literal"
    assert {x.rule for x in report.lost} == {RULE_CRASH}
    assert len(report.lost) == 100
    report.assert_clean()
    [(rank, stream, crash)] = report.crash_losses
    assert (rank, stream, crash.first, crash.last, crash.batches, crash.excess) == (
        0, "stdout", 200, 299, 1, 0,
    )  # fmt: skip


def test_literal_rule_names_the_batches_lost_beyond_the_last() -> None:
    report = crashed_tail(300, 0, batch_lines=100)
    unexplained = report.unexplained
    assert [x.index for x in unexplained] == list(range(200))
    assert all(x.rule == RULE_CRASH for x in report.lost if x.index >= 200)
    crash = unexplained[0].crash
    assert crash is not None
    assert (crash.first, crash.last, crash.lines, crash.batch_lines, crash.batches) == (
        0, 299, 300, 100, 3,
    )  # fmt: skip
    assert (crash.allowed_from, crash.excess, crash.rules) == (200, 200, "literal")
    msg = failure(report)
    assert "judged under the literal rules" in msg
    assert "lines 0-299 lost after a crash: 3 batches of 100; the literal rule allows the" in msg
    assert "200 lines before line 200 are unexplained" in msg


def test_literal_rule_with_an_unknown_batch_allows_the_tail() -> None:
    report = crashed_tail(300, 0, batch_lines=None)
    assert not report.unexplained
    report.assert_clean()


def test_strict_rule_allows_no_crash_loss() -> None:
    report = crashed_tail(10, 9, batch_lines=100, rules="strict")
    [loss] = report.lost
    assert (loss.index, loss.rule) == (9, None)
    assert loss.crash is not None and loss.crash.rules == "strict"
    msg = failure(report)
    assert "judged under the strict rules" in msg
    assert "line 9 lost after a crash (1 line); the strict rules allow no crash loss" in msg
    assert report.summary()["rules"] == "strict"


def test_strict_rule_still_allows_streaming_off() -> None:
    emitted = lines(0, 4)
    ranks = rank_ev(0, out(0, emitted, ()), crashed=True)
    report = evaluate(mesh(ranks, stream_to_client=False, rules="strict", batch_lines=1))
    assert {x.rule for x in report.lost} == {"streaming-off"}
