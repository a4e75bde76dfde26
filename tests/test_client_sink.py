"""The driver client's sink, where its user reads the lines: a write it fails loses that
write only, is journaled, and is a finding; the writes after it and the connections the
lines came on carry on. Real meshes; the failing sink writes to /dev/full (ENOSPC)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_meshlog.journal_rules import print_findings
from pytest_meshlog.stack import LoggingMeshClient, StackConfig
from pytest_meshlog.stack.outcomes import StopOutcome

from .stack_helpers import child

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full"),
]


class FullDiskOnce:
    """Prints stdout to /dev/full once (ENOSPC, as a full disk gives), then to a list."""

    def __init__(self) -> None:
        self.printed: list[bytes] = [b"", b""]
        self.lost: bytes | None = None

    def __call__(self, target: int, data: bytes) -> None:
        if target == 0 and self.lost is None:
            self.lost = data
            with open("/dev/full", "wb", buffering=0) as full:
                full.write(data)  # raises OSError(ENOSPC)
        self.printed[target] += data


@dataclass
class Run:
    outcome: StopOutcome
    journal: list[dict[str, Any]]
    delivered: dict[tuple[int, str], list[bytes]]


def run_with(tmp_path: Path, sink: Callable[[int, bytes], None], *lines: int) -> Run:
    """A mesh of `lines` children printing through `sink`, stopped once they have written
    (a stop that comes first would make them skip writes)."""
    client = LoggingMeshClient(
        StackConfig(enable_log_forwarding=True), workdir=tmp_path / "mesh", sink=sink
    )
    try:
        client.spawn([child("lines", n) for n in lines])
        client.wait_children(30)
        outcome = client.stop(30)
        return Run(outcome, client.read_journal(), client.delivered)
    finally:
        client.close()


def test_a_failed_print_loses_that_write_only_and_says_so(tmp_path: Path) -> None:
    sink = FullDiskOnce()
    run = run_with(tmp_path, sink, 200, 200)
    journal, delivered = run.journal, run.delivered
    assert run.outcome.problems == [], run.outcome.problems
    (first,) = [e for e in journal if e["ev"] == "sink_failed"]
    (total,) = [e for e in journal if e["ev"] == "sink_failed_total"]
    assert first["target"] == total["target"] == 0
    assert total["writes"] == 1 and total["bytes"] == first["bytes"] > 0
    assert first["error"].startswith("OSError: [Errno 28]"), first
    # the failed write is all that is missing: stderr whole, stdout but for that write
    assert sink.lost is not None and len(sink.lost) == first["bytes"]
    per_stream = 2 * 201  # two ranks, 200 lines and a partial tail each
    assert sum(len(delivered[r, "stdout"]) for r in (0, 1)) == per_stream
    assert sink.printed[1].count(b"\n") == per_stream
    assert sink.printed[0].count(b"\n") + sink.lost.count(b"\n") == per_stream
    assert not [e for e in journal if e["ev"] in ("message_failed", "forwarder_lost")]
    (finding,) = print_findings(journal)
    assert finding.kind == "client-print"
    assert f"failed to print {first['bytes']} bytes to stdout in 1 write" in finding.message


def test_a_sink_that_always_fails_is_counted_not_journaled_per_write(tmp_path: Path) -> None:
    def broken(target: int, data: bytes) -> None:
        raise ValueError(f"sink bug on target {target}")

    journal = run_with(tmp_path, broken, 2000).journal
    assert len(events_named(journal, "sink_failed")) == 2  # the first, per target
    totals = {e["target"]: e for e in events_named(journal, "sink_failed_total")}
    assert set(totals) == {0, 1}
    assert all(e["error"].startswith("ValueError: sink bug on target") for e in totals.values())
    assert sum(e["bytes"] for e in totals.values()) > 2 * 2000 * len(b"out 0 0\n")


def events_named(journal: list[dict[str, object]], name: str) -> list[dict[str, object]]:
    return [e for e in journal if e["ev"] == name]


def test_a_slow_sink_is_counted_as_what_held_the_loop(tmp_path: Path) -> None:
    """The sink runs on the stack's loop, so a slow one delays every timer of the driver
    (a probe's quadratic sink made stop(1) take 1.5 s): the slow calls are journaled."""
    slowed = [0]

    def slow(target: int, data: bytes) -> None:
        if target == 0 and slowed[0] < 3:
            slowed[0] += 1
            time.sleep(0.1)  # the sink's own slowness: what the journal must count

    journal = run_with(tmp_path, slow, 50).journal
    (slowest,) = events_named(journal, "sink_slow")
    assert slowest["target"] == 0 and slowest["calls"] >= slowed[0] >= 1, slowest
    assert slowest["slowest_s"] >= 0.1 and slowest["seconds"] >= slowest["slowest_s"], slowest


def test_a_sink_that_raises_system_exit_does_not_end_the_client(tmp_path: Path) -> None:
    """SystemExit or pytest.fail() in a sink (BaseExceptions) ended the stack's loop: the
    children's exit was never seen, and stop timed out (found by a probe)."""
    raised = [False]

    def exits_once(target: int, data: bytes) -> None:
        if not raised[0]:
            raised[0] = True
            raise SystemExit("a sink that calls sys.exit()")

    run = run_with(tmp_path, exits_once, 50)
    assert run.outcome.problems == []
    (failed,) = events_named(run.journal, "sink_failed")
    assert failed["error"] == "SystemExit: a sink that calls sys.exit()", failed
