"""The journal helpers both reports share: which event is blamed for a loss, and lanes."""

from __future__ import annotations

from typing import Any

from pytest_meshlog.journal_view import LOSS_CAUSES, blame, concerns, fields_text, lane_of, timed


def ev(t: Any, name: str, src: str = "host0", **fields: Any) -> dict[str, Any]:
    return {"t": t, "src": src, "ev": name, **fields}


def test_the_most_telling_kind_wins_over_an_earlier_event() -> None:
    journal = [
        ev(1.0, "eof", rank=0, stream="stdout"),
        ev(2.0, "child_exited", rank=0),
        ev(3.0, "child_killed", rank=0, src="driver"),
        ev(4.0, "send_skipped", rank=0, stream="stdout"),
    ]
    assert blame(journal, 0, "stdout") == journal[3]
    assert blame(journal, 0, "stderr") == journal[2]  # the skip was on the other stream
    assert blame(journal[:2], 0, "stdout") == journal[1]
    assert LOSS_CAUSES[0] == "send_skipped" and LOSS_CAUSES[-1] == "eof"


def test_blame_reads_events_in_time_order_and_skips_untimed_ones() -> None:
    journal = [
        ev(5.0, "child_exited", rank=1, code=0),
        ev(None, "child_exited", rank=1, code=1),
        ev(2.0, "child_exited", rank=1, code=9),
    ]
    assert blame(journal, 1, "stdout") == journal[2]
    assert [e for _, e in timed(journal)] == [journal[2], journal[0]]


def test_without_a_cause_the_ranks_last_event_is_blamed_else_nothing() -> None:
    journal = [ev(1.0, "stop_requested", src="rank2"), ev(2.0, "hello", src="driver", rank=2)]
    assert blame(journal, 2, "stdout") == journal[1]
    assert blame(journal, 3, "stdout") is None
    assert blame([], 0, None) is None


def test_lanes_concerns_and_fields() -> None:
    assert lane_of(ev(1, "eof", rank=3)) == "rank3"
    assert lane_of(ev(1, "stop_requested", src="rank1")) == "rank1"
    assert lane_of(ev(1, "host_started")) == "host0"
    assert lane_of(ev(1, "eof", rank=True)) == "host0"  # a bool is not a rank
    assert concerns(ev(1, "eof", rank=3), 3) and not concerns(ev(1, "eof", rank=3), 2)
    assert concerns(ev(1, "stop_begin", src="driver"), 2)
    assert fields_text(ev(1, "eof", rank=3, stream="stdout")) == "rank=3 stream=stdout"


def test_the_reports_name_journal_events_by_ev() -> None:
    """Journal event names are defined once (stack.journal.Ev): the harness's evidence,
    oracle and reports use them by name. The strings left are not event names: a crash's
    `how`, fault kinds, a finding kind and record fields that share an event's word."""
    import ast
    from pathlib import Path

    from pytest_meshlog.stack.journal import Ev

    names = {e.value for e in Ev}
    not_events = {
        ("catalog.py", "file_write_error"),  # the fault kind
        ("catalog.py", "abort"),  # a crash's `how`
        ("faults.py", "file_write_error"),
        ("faults.py", "abort"),
        ("html_report.py", "console_bytes"),  # a stream's field in the light report
        ("summary.py", "console_bytes"),
        ("journal_rules.py", "eof"),  # the finding kind, and the abort event's field
        ("leaks.py", "child_spawned"),  # (not the harness's reports: the lead's module)
    }
    root = Path(__file__).resolve().parent.parent / "pytest_meshlog"
    bare = sorted(
        (path.name, node.value)
        for path in root.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and node.value in names
    )
    assert [b for b in bare if b not in not_events] == []
