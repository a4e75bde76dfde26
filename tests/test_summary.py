"""The end-of-run summary and the light (JSON) form of a ReportEntry that xdist ships."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from pytest_meshlog.oracle import evaluate
from pytest_meshlog.report import RULE_CRASH, BarrierResult, TeardownReport
from pytest_meshlog.summary import ReportEntry, cut_journal, summary_lines
from tests.test_oracle import journal, lines, mesh, out, rank_ev

SCRIPT_LINE = b"[2] <script>alert('x')</script> & \x00\x1b[31m \xff\xfe"


def lossy_report() -> TeardownReport:
    """Three ranks: rank 1 crashes (3 lines lost, allowed), rank 2 loses a middle line (no rule
    allows it), and a second barrier times out waiting for rank 1."""
    crash_lines = lines(1, 10)
    lossy_lines = (*lines(2, 4), SCRIPT_LINE, *lines(2, 4)[1:])
    ranks = (
        rank_ev(0),
        rank_ev(1, out(1, crash_lines, crash_lines[:7]), crashed=True),
        rank_ev(2, out(2, lossy_lines, lossy_lines[:4] + lossy_lines[5:])),
    )
    events = [
        *journal(ranks),
        {"t": 100.2, "src": "driver", "ev": "barrier_started", "version": 2, "expected": 3},
        {"t": 100.25, "src": "host0", "ev": "send_skipped", "rank": 2, "stream": "stdout",
         "lines": 1, "what": "log"},
        {"t": 100.3, "src": "driver", "ev": "forwarder_lost", "rank": 1},
        {"t": 102.2, "src": "driver", "ev": "barrier_timeout", "version": 2, "missing": [1]},
    ]  # fmt: skip
    barriers = (
        BarrierResult(1, "completed", (0, 1, 2), (), 0.01),
        BarrierResult(2, "timeout", (0,), (1, 2), 2.0),
    )
    return evaluate(mesh(*ranks, journal=tuple(events), barriers=barriers))


def clean_report(n: int = 1_500, latency: float = 0.04) -> TeardownReport:
    ranks = (rank_ev(0, out(0, lines(0, n))), rank_ev(1))
    return evaluate(mesh(*ranks, barriers=(BarrierResult(1, "completed", (0, 1), (), latency),)))


def entries() -> list[ReportEntry]:
    return [
        ReportEntry(
            "meshlog::test_crash_mid_batch[procs=3]",
            "failed",
            "reference",
            4242,
            3,
            0.41,
            lossy_report(),
        ),
        ReportEntry(
            "meshlog::test_flood[procs=2]", "passed", "reference", 4242, 2, 0.12, clean_report()
        ),
        ReportEntry("meshlog::test_silent[procs=2]", "skipped", "reference", None, 2, 0.0),
    ]


def rows(lines_: list[str]) -> dict[str, str]:
    """`label: value` lines as a dict, checking the values are aligned in one column."""
    columns = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in lines_}
    assert len(columns) == 1, lines_
    return {k: v.strip() for k, v in (line.split(":", 1) for line in lines_)}


def test_entry_fills_its_light_form_from_the_report() -> None:
    report = lossy_report()
    entry = ReportEntry("t", "failed", "reference", 4242, 3, 0.41, report)
    assert entry.numbers == json.loads(json.dumps(report.summary()))
    assert entry.numbers["lost"] == {RULE_CRASH: 3, "unexplained": 1}
    rank1 = [s for s in entry.streams if (s["rank"], s["stream"]) == (1, "stdout")]
    assert rank1 == [
        {
            "rank": 1,
            "stream": "stdout",
            "emitted": 10,
            "delivered": 7,
            "in_files": None,
            "emitted_bytes": report.stream(1, "stdout").emitted_bytes,
            "console_bytes": report.stream(1, "stdout").console_bytes,
            "lost": {"client": {RULE_CRASH: 3}},
            "partial_line_forwarded": None,
            "flush_none_at_eof": 1,
            "eof_seen": True,
        }
    ]
    assert {r["rank"]: r["crashed"] for r in entry.ranks} == {0: False, 1: True, 2: False}
    assert entry.problems == report.problems()
    assert any("barrier v2 timed out" in p for p in entry.problems)
    assert entry.journal_total == len(report.journal) == len(entry.journal)
    assert entry.journal_cut == 0


def test_expectations_decide_which_problems_are_listed() -> None:
    entry = ReportEntry("t", "passed", "reference", 1, 3, 0.4, lossy_report(), 1, "timeout")
    assert not any("timed out" in p for p in entry.problems)
    assert not any("never reached the client" in p for p in entry.problems)


def test_light_form_round_trips_through_json() -> None:
    for entry in entries():
        data = entry.to_dict()
        assert "report" not in data
        wire = json.dumps(data)  # raises if anything is not a JSON type
        back = ReportEntry.from_dict(json.loads(wire))
        assert back == entry
        assert back.report is None
        assert back.to_dict() == data
        assert summary_lines([back]) == summary_lines([entry])
    assert ReportEntry.from_dict({**entries()[1].to_dict(), "added_later": 1}) == entries()[1]


def test_summary_lines_count_and_align() -> None:
    got = rows(summary_lines(entries()))
    assert got["scenarios"] == "3 (1 passed, 1 failed, 1 skipped)"
    assert got["stack"] == "reference"
    assert got["seed"] == "4242"
    assert got["children"] == "7"  # 3 + 2 from the reports, 2 from procs
    # lossy: 5+2, 10+2, 8+2 emitted; clean: 1,500+2, 5+2
    assert got["lines emitted"] == "1,538"
    assert got["lines delivered"] == "1,534 (99.74 %)"
    assert got["lost"] == "4 (crash-last-batch 3, unexplained 1)"
    assert got["barriers"] == "3 (2 completed, 1 timeout)"
    assert got["barrier latency"] == "median 25.0 ms, max 40.0 ms"
    assert got["teardown"] == "median 0.12 s"
    assert got["slowest teardown"] == "0.41 s meshlog::test_crash_mid_batch[procs=3]"
    assert got["unexplained losses in"] == "meshlog::test_crash_mid_batch[procs=3] (1)"
    assert "lines in files" not in got


def test_summary_median_over_many_meshes_and_stacks() -> None:
    meshes = [
        ReportEntry(f"t{i}", "passed", stack, i, 2, 0.05 * (i + 1), clean_report(5, lat))
        for i, (stack, lat) in enumerate(
            [("reference", 0.001), ("reference", 0.003), ("other", 0.002), ("reference", 0.1)]
        )
    ]
    meshes.append(dataclasses.replace(meshes[0], teardown_s=0.07))  # a second mesh of t0
    got = rows(summary_lines(meshes))
    assert got["scenarios"] == "4, 5 meshes (4 passed)"
    assert got["stack"] == "reference (4), other (1)"
    assert got["seed"] == "4 different (each failure prints its own)"
    assert got["barrier latency"] == "median 2.0 ms, max 0.10 s"
    assert got["lost"] == "none"
    assert got["slowest teardown"] == "0.20 s t3"
    assert "unexplained losses in" not in got


def test_summary_of_nothing() -> None:
    assert summary_lines([]) == ["no meshes were spawned"]
    got = rows(summary_lines([ReportEntry("t", "error", "reference", None, 4, 0.0)]))
    assert got["children"] == "4"
    assert got["barriers"] == "none recorded"
    assert got["scenarios"] == "1 (1 error)"


def test_journal_cut_keeps_teardown_events_and_says_so() -> None:
    report = clean_report(5)
    chatty: list[dict[str, Any]] = [
        {"t": 99.0 + i * 1e-4, "src": "driver", "ev": "aggregate_printed", "lines": i}
        for i in range(3_000)
    ]
    big = dataclasses.replace(report, journal=(*chatty, *report.journal))
    entry = ReportEntry("t", "passed", "reference", 1, 2, 0.1, big)
    assert len(entry.journal) == 2_000
    assert entry.journal_total == 3_000 + len(report.journal)
    assert entry.journal_cut == 1_000 + len(report.journal)
    kinds = [e["ev"] for e in entry.journal]
    for kind in ("eof", "flush_none_posted", "stop_end", "barrier_completed"):
        assert kind in kinds
    times = [e["t"] for e in entry.journal]
    assert times == sorted(times)
    events = [{"t": float(i), "ev": "x"} for i in range(10)]
    assert [e["t"] for e in cut_journal(events, 4)] == [0.0, 1.0, 8.0, 9.0]
