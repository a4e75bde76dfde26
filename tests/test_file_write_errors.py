"""A host whose file writes fail partway (a file-size limit, as a full disk does) against
the real stack: the file keeps whole lines only, and the appender counts exactly those."""

from __future__ import annotations

import fcntl
import glob
import os
import resource
import struct
import sys
import termios
import time
from pathlib import Path

import pytest

from pytest_meshlog.scenario_tools import poll_until
from pytest_meshlog.stack import ChildSpec, LoggingMeshClient, StackConfig

from .stack_helpers import SIMPLE, Captured, child, events, mesh, wait_delivered

LIMIT = 64 * 1024
"""The host's RLIMIT_FSIZE: not a multiple of the file's 104-byte lines ("[0] " and 100),
so the write that reaches it is cut mid-line (then EFBIG: Python ignores SIGXFSZ)."""


def test_a_write_cut_short_leaves_no_torn_line_for_the_next_write(tmp_path: Path) -> None:
    n = 1000  # 100 KB per phase: the first runs past the limit
    go, go2 = tmp_path / "go", tmp_path / "go2"
    cfg = StackConfig(enable_log_forwarding=True, env="prod", log_dir=str(tmp_path / "logs"))
    with LoggingMeshClient(cfg, workdir=tmp_path / "mesh", sink=Captured()) as m:
        m.spawn([ChildSpec([sys.executable, SIMPLE, "two-floods", str(n), str(go), str(go2)])])
        host = m.host_links[0].proc.pid
        _soft, hard = resource.prlimit(host, resource.RLIMIT_FSIZE)
        resource.prlimit(host, resource.RLIMIT_FSIZE, (LIMIT, hard))
        go.touch()
        deadline = time.monotonic() + 30
        while not events(m, "file_write_error"):
            assert time.monotonic() < deadline, "the host's file writes never failed"
            time.sleep(0.01)
        resource.prlimit(host, resource.RLIMIT_FSIZE, (hard, hard))  # space is freed
        go2.touch()
        wait_delivered(m, 0, "stdout", 2 * n)
        assert m.stop(30).problems == []
        (path,) = glob.glob(str(tmp_path / "logs" / "*.stdout"))
        data = Path(path).read_bytes()
        emitted = set(m.delivered[(0, "stdout")])
        assert data.endswith(b"\n")
        lines = data[:-1].split(b"\n")
        assert [ln for ln in lines if ln not in emitted] == []  # none torn, none glued
        assert any(b"second" in ln for ln in lines)  # written after the failure
        (closed,) = events(m, "file_appender_closed")
        assert closed["lines_written"]["stdout"] == len(lines)
        assert closed["lines_written"]["stdout"] + closed["write_errors"]["stdout"] == 2 * n
        failed = events(m, "file_write_error", stream="stdout")
        assert failed[0]["torn"] == "removed" and failed[0]["torn_bytes"] > 0
        assert sum(e["lines"] for e in failed) == closed["write_errors"]["stdout"]


def test_a_fault_switch_left_in_the_users_environment_does_not_reach_the_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`MESHLOG_FAULT_*` switches reach hosts only through the harness's faults: one left
    set in a user's shell broke every file write, and the losses were then explained by
    the errors it caused, so a test without any fault passed with empty files."""
    monkeypatch.setenv("MESHLOG_FAULT_FILE_ERRORS", "1")
    cfg = StackConfig(enable_log_forwarding=True, env="prod", log_dir=str(tmp_path / "logs"))
    with LoggingMeshClient(cfg, workdir=tmp_path / "mesh", sink=Captured()) as m:
        m.spawn([ChildSpec([sys.executable, SIMPLE, "lines", "3"])])
        m.wait_children(10)  # a stop before it wrote would skip its writes
        assert m.stop(30).problems == []
        assert events(m, "file_write_error") == []
        (path,) = glob.glob(str(tmp_path / "logs" / "*.stdout"))
        assert Path(path).read_bytes().count(b"\n") == 4  # 3 lines and the tail's newline


def test_a_console_write_that_fails_is_counted_as_not_written(tmp_path: Path) -> None:
    """The console check compares what reached the console with what the child wrote; the
    tee journaled the bytes it read, so a console that refused every write (here the
    host's console file is /dev/full) passed the check."""
    cfg = StackConfig(enable_log_forwarding=True)
    with LoggingMeshClient(cfg, workdir=tmp_path / "mesh", sink=Captured()) as m:
        (tmp_path / "mesh" / "console-host0.stdout").symlink_to("/dev/full")
        m.spawn([ChildSpec([sys.executable, SIMPLE, "lines", "3"])])
        m.wait_children(10)  # a stop before it wrote would skip its writes
        m.stop(30)
        assert len(m.delivered[(0, "stdout")]) == 4  # the log lines are not the console's
        (counted,) = events(m, "console_bytes", rank=0, stream="stdout")
        assert counted["bytes"] == 0, counted
        assert "No space left on device" in counted["error"]
        (other,) = events(m, "console_bytes", rank=0, stream="stderr")
        assert other["bytes"] > 0 and "error" not in other


def test_a_write_that_blocks_in_the_kernel_stalls_only_its_writer(tmp_path: Path) -> None:
    """A disk that stalls: the host's files point at a FIFO the test holds open and never
    reads, so the writer's write(2) blocks once the FIFO's 64 KiB are full. The write runs
    in the writer's thread: the host still answers a barrier and stop, and the writer is
    given up at the close deadline, named with how long its write had blocked. (On the
    host's loop, the blocked write froze the whole host: the barrier timed out and the
    host was killed at the stop deadline, its ranks' end unknown.)"""
    fifo = tmp_path / "stalled-disk"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # held, never read
    go = tmp_path / "GO"
    spec = ChildSpec([sys.executable, SIMPLE, "on-go", "20000", str(go)])  # about 190 KB
    try:
        with mesh(tmp_path, [spec, child("hang")], env="prod", log_dir=str(tmp_path / "logs")) as m:
            wait_delivered(m, 0, "stdout", 1)  # "ready"
            m.inject(0, "redirect_files", str(fifo))
            go.touch()
            poll_until(  # full but for a page: each write is split into page-sized slots
                lambda: _unread(reader) >= FIFO_FULL,
                20,
                lambda: f"the file writer to fill the FIFO ({_unread(reader)} bytes in it)",
            )
            barrier = m.flush(5)
            outcome = m.stop(3)
            timed_out = events(m, "file_writer_timed_out", stream="stdout")
    finally:
        os.close(reader)
    assert barrier.completed, barrier
    assert not [p for p in outcome.problems if p.kind.startswith("host")], outcome.problems
    assert outcome.unanswered_ranks == ()
    (writer,) = timed_out
    assert writer["blocked_s"] is not None and writer["blocked_s"] > 0, writer
    assert writer["unwritten_lines"] > 0, writer


FIFO_FULL = 65536 - 4096


def _unread(fd: int) -> int:
    """Bytes waiting in a pipe or FIFO (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
