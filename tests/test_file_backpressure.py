"""A slow disk (the `slow_files` fault) against the real stack: the file writer's queue
holds the tee, and so the child, instead of growing the host (issue 11, finding 7); a
writer still busy at the close deadline is named, not blamed on a lost wake-up."""

from __future__ import annotations

import glob
from pathlib import Path

from pytest_meshlog.journal_rules import writer_findings
from pytest_meshlog.stack import LoggingMeshClient, StackConfig, file_appender

from .stack_helpers import Captured, child, events

LINE = 41  # bytes of one `flood` line, newline included


def slow_disk_mesh(tmp_path: Path, delay: float) -> LoggingMeshClient:
    cfg = StackConfig(enable_log_forwarding=True, env="prod", log_dir=str(tmp_path / "logs"))
    return LoggingMeshClient(
        cfg,
        workdir=tmp_path / "mesh",
        sink=Captured(),
        extra_env={"MESHLOG_FAULT_FILE_DELAY": str(delay)},
    )


def file_lines(tmp_path: Path, stream: str) -> int:
    return sum(
        Path(p).read_bytes().count(b"\n") for p in glob.glob(str(tmp_path / "logs" / f"*.{stream}"))
    )


def test_a_slow_disk_holds_the_child_instead_of_queueing_its_output(tmp_path: Path) -> None:
    n = 60_000  # 600 batches; at 5 ms each the disk takes 3 s, the child alone ~0.3 s
    with slow_disk_mesh(tmp_path, 0.005) as m:
        m.spawn([child("flood", n)])
        m.wait_children(120)
        # The child ended (its output all read by the tee) only when the queue had room:
        # at most the queue's bound was still unwritten then. Unbounded, it is ~all of it.
        written_at_exit = file_lines(tmp_path, "stdout")
        # bound: 256 KiB + (a 64 KiB read + a 64 KiB pipe) x 7 ~= 1.1 MiB (see below)
        assert n - written_at_exit <= 1_250_000 // (LINE + len("[0] "))  # unbounded: ~n
        outcome = m.stop(60)
        assert outcome.problems == []
        closed = events(m, "file_appender_closed")
        assert len(closed) == 1
        bound = closed[0]["queue_bound_bytes"]["stdout"]
        assert file_appender.QUEUE_HIGH_BYTES < bound < n * LINE // 2
        assert closed[0]["peak_queued_bytes"]["stdout"] <= bound
        assert closed[0]["holds"]["stdout"] > 0
        assert not closed[0]["timed_out"]
        assert n - written_at_exit <= bound // (LINE + len("[0] "))
        assert file_lines(tmp_path, "stdout") == n
        assert len(m.delivered[(0, "stdout")]) == n


def test_a_writer_busy_at_the_close_deadline_is_named_not_blamed_on_a_lost_wakeup(
    tmp_path: Path,
) -> None:
    n = 5_000  # 50 batches of 100 lines; at 0.1 s each, 5 s of disk: past any close deadline
    with slow_disk_mesh(tmp_path, 0.1) as m:
        m.spawn([child("flood", n)])
        m.wait_children(30)
        m.stop(3)
        timed_out = events(m, "file_writer_timed_out")
        assert [e["stream"] for e in timed_out] == ["stdout"]
        e = timed_out[0]
        assert e["src"] == "host0" and e["path"].endswith(".stdout")
        assert e["unwritten_lines"] > 0
        assert e["unwritten_lines"] + e["lines_written"] == n
        assert e["unwritten_lines"] + file_lines(tmp_path, "stdout") == n
        assert e["write_delay_s"] == 0.1 and e["slowest_batch_s"] >= 0.1
        findings = writer_findings(m.read_journal())
        assert [f.kind for f in findings] == ["file-close-deadline"]
        assert "host0's stdout file writer" in findings[0].message
        assert f"{e['unwritten_lines']} posted lines were never written" in findings[0].message
        assert "lost wake-up" not in findings[0].message
