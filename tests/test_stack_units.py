"""Stack components on their own, with real pipes and files: the SPEC 1.11 weak points."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pytest_meshlog.stack import wire
from pytest_meshlog.stack.blobs import Lines
from pytest_meshlog.stack.client import LogClientActor
from pytest_meshlog.stack.file_appender import FileAppender
from pytest_meshlog.stack.hosts import HostLink
from pytest_meshlog.stack.journal import Journal, read_journal
from pytest_meshlog.stack.outcomes import MeshError
from pytest_meshlog.stack.tee import StreamFwder


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 10))


@pytest.mark.parametrize("writer_closed", [True, False])
def test_abort_drains_the_pipe_and_forwards_the_tail(tmp_path: Path, writer_closed: bool) -> None:
    """Stop racing EOF: bytes still in the pipe when abort() is called are not dropped."""

    async def scenario() -> tuple[list[bytes], FileAppender]:
        journal = Journal(tmp_path, "host0")
        files = FileAppender(str(tmp_path / "logs"), "t", "host0", journal)
        r, w = os.pipe()
        os.write(w, b"a\nb\npart")
        if writer_closed:
            os.close(w)
        console = os.open(os.devnull, os.O_WRONLY)
        fwder = StreamFwder(
            rank=0, stream="stdout", fd=r, console_fd=console, sender=None, files=files,
            prefix=b"[0] ", batch_lines=100, journal=journal,
        )  # fmt: skip
        # never started: the tee has read nothing when the stop comes
        lines, error = await fwder.abort()
        assert error is None
        await files.close(time.monotonic() + 5)
        if not writer_closed:
            os.close(w)
        os.close(console)
        return lines, files

    lines, files = run(scenario())
    assert lines == [b"[0] a", b"[0] b", b"[0] part"]
    assert Path(files.paths["stdout"]).read_bytes() == b"[0] a\n[0] b\n[0] part\n"
    (abort,) = [e for e in read_journal(tmp_path) if e["ev"] == "abort"]
    assert abort["drained_bytes"] == 8 and abort["eof"] is writer_closed


def test_file_appender_close_writes_everything_already_posted(tmp_path: Path) -> None:
    """Queued file lines are not dropped on close, even if the writers never ran before it."""

    async def scenario() -> FileAppender:
        files = FileAppender(str(tmp_path), "t", "h", Journal(tmp_path, "host0"))
        for i in range(500):
            files.post("stdout", Lines(f"{i}-a\n{i}-b".encode(), 2))
            files.post("stderr", Lines(f"{i}".encode(), 1))
        await files.close(
            time.monotonic() + 5
        )  # the stop comes before any writer task was scheduled
        return files

    files = run(scenario())
    assert files.lines_written == {"stdout": 1000, "stderr": 500}
    out = Path(files.paths["stdout"]).read_bytes().splitlines()
    assert out == [f"{i}-{x}".encode() for i in range(500) for x in "ab"]


def test_file_appender_close_is_level_triggered(tmp_path: Path) -> None:
    """A close that happens while a writer is busy elsewhere is still seen (no lost wake-up)."""

    async def scenario() -> FileAppender:
        files = FileAppender(str(tmp_path), "t", "h", Journal(tmp_path, "host0"))
        files.post("stdout", Lines(b"first", 1))
        await asyncio.sleep(0)  # writers run once and block on their queues
        files.stop.set()  # the signal alone, before close() posts its end markers
        await asyncio.sleep(0.01)
        files.post("stdout", Lines(b"late", 1))  # refused after stop, and journaled
        await files.close(time.monotonic() + 5)
        return files

    files = run(scenario())
    assert Path(files.paths["stdout"]).read_bytes() == b"first\n"
    journal = read_journal(tmp_path)
    assert any(e["ev"] == "file_post_after_close" for e in journal)
    (closed,) = [e for e in journal if e["ev"] == "file_appender_closed"]
    assert closed["timed_out"] is False, "close() waited for a wake-up that never came"


def test_barrier_bookkeeping_stale_and_no_open(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        client = LogClientActor(str(tmp_path / "c.sock"), Journal(tmp_path, "driver"))
        client.barriers.ack(0, 1)  # no barrier open
        b1 = client.start_sync_flush(frozenset({0, 1}))
        b2 = client.start_sync_flush(frozenset({0, 1}))
        client.barriers.ack(0, b1.version)  # stale
        client.barriers.ack(0, b2.version)
        client.barriers.ack(1, b2.version)
        return [(await b1.future).status, (await b2.future).status]

    assert run(scenario()) == ["superseded", "completed"]
    names = [e["ev"] for e in read_journal(tmp_path)]
    for name in ("barrier_no_open", "barrier_superseded", "barrier_stale", "barrier_completed"):
        assert name in names


def test_frames_carry_arbitrary_bytes_across_any_split() -> None:
    msg = (wire.LOG, "host0", "proc[0]", 1, 3, b"\xff\xfe\x00bad utf-8\n\nok")
    data = wire.encode(msg) * 3
    for step in (1, 2, 7, len(data)):
        dec = wire.FrameDecoder()
        got = [m for i in range(0, len(data), step) for m in dec.feed(data[i : i + step])]
        assert got == [list(msg)] * 3


def test_oversized_or_garbage_frames_are_errors() -> None:
    with pytest.raises(wire.FrameError, match="exceeds"):
        wire.FrameDecoder().feed(b"\xff\xff\xff\xff")
    with pytest.raises(wire.FrameError, match="not a message array"):
        wire.FrameDecoder().feed(b"\x00\x00\x00\x01\x05")


@pytest.mark.parametrize(
    ("signal_first", "state"), [(None, "sleeping"), (signal.SIGSTOP, "stopped")]
)
def test_a_host_that_misses_a_deadline_says_how_it_spent_it(
    signal_first: int | None, state: str
) -> None:
    """A timeout waiting for a host says what the host did meanwhile (state, CPU used, the
    machine's load): one that never got the CPU is told apart from one that hung. A real
    process stands in for a host that never answers (`sleep`, and a stopped one)."""
    proc = subprocess.Popen(["sleep", "30"])
    try:
        if signal_first is not None:
            proc.send_signal(signal_first)

        async def wait() -> None:
            host = HostLink(0, proc, ("", ""), lambda rank, info: None)
            await host.next_reply(time.monotonic() + 0.3, "host0 to start")

        said = rf"timed out waiting for host0 to start \(host0: pid {proc.pid} {state}, \d+ ms "
        with pytest.raises(MeshError, match=said + r"of CPU in its \d+\.\d s; load average "):
            asyncio.run(wait())
    finally:
        proc.kill()
        proc.wait()
