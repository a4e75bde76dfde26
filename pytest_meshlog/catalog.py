"""The built-in teardown scenario catalog that `pytest --meshlog` runs.

Each scenario is an ordinary test on the `meshlog` and `fake_procs` fixtures, and its
docstring states the rule it checks. Teardown is verified by the fixture: the oracle
compares every line each child wrote with what reached the client, the files and the
console, and fails unless every loss is allowed by a documented rule.
"""

from __future__ import annotations

import signal
import threading

import pytest

from fake_procs import CrashHow, FakeProcs, read_progress

from .harness import MeshHarness
from .markers import HOSTILE_ATTACKS
from .report import BarrierResult
from .scenario_tools import flush_until_everyone_waited, in_flight, journal_events, poll_until
from .stack import Ev


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    from .settings import SETTINGS

    settings = metafunc.config.stash[SETTINGS]
    if "procs" in metafunc.fixturenames:
        counts = [2] if settings.selftest else sorted({1, settings.procs})
        metafunc.parametrize("procs", counts, ids=lambda n: f"procs={n}")
    if settings.selftest:
        from .selftest.variants import VARIANTS

        metafunc.parametrize(
            "meshlog_stack", [f"reference+{v}" for v in VARIANTS], ids=list(VARIANTS), indirect=True
        )


def test_happy_path(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """Every line of every child reaches the client, in order, and nothing else does."""
    mesh = meshlog.spawn([fake_procs.partial_line_writer(lines=20) for _ in range(procs)])
    mesh.wait_scripts()
    mesh.stop().assert_clean()


def test_partial_last_line_both_streams(
    meshlog: MeshHarness, fake_procs: FakeProcs, procs: int
) -> None:
    """On EOF the tee forwards each stream's final partial line (to client and files)."""
    s = fake_procs.script().line().line(stream="stderr").partial().partial(stream="stderr")
    mesh = meshlog.spawn([s] * procs, env="prod")
    mesh.wait_scripts()
    report = mesh.stop()
    assert all(
        report.partial_line_forwarded[r, s] for r in mesh.ranks for s in ("stdout", "stderr")
    )


@pytest.mark.parametrize("how", ["exit", "sigkill", "sigsegv", "abort"])
def test_crash_mid_batch(
    meshlog: MeshHarness, fake_procs: FakeProcs, procs: int, how: CrashHow
) -> None:
    """A crashed child may lose only the tail of what it wrote to the client (the last
    batch); its file lines are complete, the others lose nothing, and stop never hangs."""
    scripts = [fake_procs.crasher(after_lines=300, how=how)] + [
        fake_procs.partial_line_writer(lines=50) for _ in range(procs - 1)
    ]
    mesh = meshlog.spawn(scripts, env="prod")
    exits = mesh.wait_scripts()
    assert exits[0].code != 0 or exits[0].signal is not None
    mesh.stop().assert_clean()


def test_crash_between_barrier_and_stop(
    meshlog: MeshHarness, fake_procs: FakeProcs, procs: int
) -> None:
    """Lines before a completed barrier are delivered even if the child dies right after."""
    s = fake_procs.script().flood(200, 60).barrier(timeout=20).crash("sigkill")
    mesh = meshlog.spawn([s] * procs, env="prod")
    result = flush_until_everyone_waited(mesh, procs)
    assert result.completed, result
    mesh.wait_scripts()
    report = mesh.stop()
    for r in mesh.ranks:
        assert report.stream(r, "stdout").delivered >= 200, (
            f"rank {r} lost lines from before the barrier"
        )


def test_interleaved_streams(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """stdout and stderr interleave freely; order is checked per rank per stream only."""
    mesh = meshlog.spawn([fake_procs.interleaver(lines=400) for _ in range(procs)])
    mesh.wait_scripts()
    mesh.stop().assert_clean()


@pytest.mark.parametrize("read_log_buffer", [1, 100])
def test_flood_with_backpressure(
    meshlog: MeshHarness, fake_procs: FakeProcs, procs: int, read_log_buffer: int
) -> None:
    """A chatty child is slowed by backpressure, never by loss; batches stay bounded."""
    s = fake_procs.flooder(lines=20_000, line_bytes=40)
    mesh = meshlog.spawn([s] * procs, read_log_buffer=read_log_buffer, env="prod")
    mesh.wait_scripts()
    mesh.stop().assert_clean()


@pytest.mark.parametrize("nbytes", [4095, 4096, 4097, 9000])
def test_4k_boundary_multibyte(
    meshlog: MeshHarness, fake_procs: FakeProcs, procs: int, nbytes: int
) -> None:
    """Lines over 4096 bytes are cut at a UTF-8 boundary at or below 4096, then suffixed."""
    mesh = meshlog.spawn([fake_procs.long_liner(nbytes=nbytes) for _ in range(procs)], env="prod")
    mesh.wait_scripts()
    mesh.stop().assert_clean()


def test_invalid_utf8(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """Invalid UTF-8 becomes U+FFFD; NUL and lone CR survive; nothing is dropped."""
    mesh = meshlog.spawn([fake_procs.binary_writer(lines=30) for _ in range(procs)], env="prod")
    mesh.wait_scripts()
    mesh.stop().assert_clean()


def test_crlf(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """A CRLF ending is a plain line end; a CR inside a line stays."""
    s = (
        fake_procs.script()
        .raw(b"one\r\ntwo\r\n\r\nthree\rfour\r\n")
        .raw(b"tail\r", stream="stderr")
    )
    mesh = meshlog.spawn([s] * procs, env="prod")
    mesh.wait_scripts()
    mesh.stop().assert_clean()


def test_hanging_child(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """A child that never ends is quiesced by stop: its partial line still arrives."""
    s = fake_procs.script().line().line(stream="stderr").partial().partial(stream="stderr").hang()
    mesh = meshlog.spawn([s] * procs, env="prod")
    poll_until(
        lambda: all(b"\nhang " in mesh.progress(r) for r in mesh.ranks), what="children to hang"
    )
    report = mesh.stop()
    report.assert_clean()
    assert all(
        report.partial_line_forwarded[r, s] for r in mesh.ranks for s in ("stdout", "stderr")
    )


def test_silent_child(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """A child that writes nothing still gets exactly one Flush(None) per stream at EOF."""
    meshlog.require("journal", "Flush(None) at EOF is seen only in the journal")
    mesh = meshlog.spawn([fake_procs.silent() for _ in range(procs)])
    mesh.wait_scripts()
    report = mesh.stop()
    assert all(n == 1 for n in report.flush_none_at_eof.values()), report.flush_none_at_eof


def test_env_local_without_force(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """Env::Local without HYPERACTOR_FORCE_FILE_LOG: no files, streaming still works."""
    meshlog.require("file_gate", "the test checks the environment's rule for per-proc files")
    mesh = meshlog.spawn([fake_procs.partial_line_writer(lines=10)] * procs, env="local")
    mesh.wait_scripts()
    report = mesh.stop()
    assert report.files == () and report.files_gate_reason


def test_env_local_with_force(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """Env::Local with HYPERACTOR_FORCE_FILE_LOG=true: per-host files hold every line."""
    meshlog.require("file_gate", "the test checks the environment's rule for per-proc files")
    mesh = meshlog.spawn(
        [fake_procs.partial_line_writer(lines=10)] * procs, env="local", force_file_log=True
    )
    mesh.wait_scripts()
    report = mesh.stop()
    assert len(report.files) == 2


def test_env_test_has_no_files(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """The Test environment never writes files, even when forced."""
    meshlog.require("file_gate", "the test checks the environment's rule for per-proc files")
    mesh = meshlog.spawn(
        [fake_procs.partial_line_writer(lines=10)] * procs, env="test", force_file_log=True
    )
    mesh.wait_scripts()
    assert mesh.stop().files == ()


def test_env_prod_writes_files(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """A non-local environment writes `{basename}_{host}_{id}.{stream}` files in its log dir."""
    meshlog.require("file_gate", "the test checks where the environment puts per-host files")
    mesh = meshlog.spawn([fake_procs.interleaver(lines=50)] * procs, env="prod")
    mesh.wait_scripts()
    report = mesh.stop()
    assert report.files and all(str(mesh.log_dir) in f for f in report.files)


def test_aggregation_counts(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """With an aggregation window, every line is counted once per stream."""
    s = fake_procs.script()
    for i in range(30):
        s = s.line(f"worker step {i % 3} finished", tag=False).line(
            f"warning {i % 2}", stream="stderr", tag=False
        )
    mesh = meshlog.spawn([s] * procs, aggregate_window_sec=0.2)
    mesh.wait_scripts()
    mesh.stop().assert_clean()
    printed = mesh.output.paths[0].read_text()
    assert "Aggregated Logs (start)" in printed


def test_stream_to_client_off(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """With streaming off nothing reaches the client, yet files and the console get it all."""
    mesh = meshlog.spawn(
        [fake_procs.partial_line_writer(lines=10)] * procs, stream_to_client=False, env="prod"
    )
    mesh.wait_scripts()
    report = mesh.stop()
    assert all(report.stream(r, "stdout").delivered == 0 for r in mesh.ranks)


def test_superseded_barrier(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """A barrier started while one is open answers the first caller (superseded)."""
    meshlog.require("journal", "the test waits for barrier_started events in the journal")
    mesh = meshlog.spawn([fake_procs.hanger() for _ in range(procs)])
    mesh.kill(0, signal.SIGSTOP)  # rank 0 cannot ack while stopped
    results: dict[int, BarrierResult] = {}
    threads = [
        threading.Thread(target=lambda n=n: results.__setitem__(n, mesh.flush(timeout=5)))
        for n in (1, 2)
    ]
    threads[0].start()
    poll_until(
        lambda: len(journal_events(mesh, Ev.BARRIER_STARTED)) >= 1, what="barrier 1 to start"
    )
    threads[1].start()
    poll_until(
        lambda: len(journal_events(mesh, Ev.BARRIER_STARTED)) >= 2, what="barrier 2 to start"
    )
    mesh.kill(0, signal.SIGCONT)
    for t in threads:
        t.join(15)
        assert not t.is_alive(), "a barrier caller never heard back"
    assert results[1].status == "superseded" and results[2].completed
    mesh.stop()


@pytest.mark.meshlog_expect(barrier="timeout")
def test_barrier_timeout_names_ranks(
    meshlog: MeshHarness, fake_procs: FakeProcs, procs: int
) -> None:
    """A barrier that cannot complete ends by its deadline, naming the ranks that did not ack."""
    meshlog.require("barrier", "the test flushes the mesh")
    mesh = meshlog.spawn([fake_procs.hanger() for _ in range(procs)])
    mesh.kill(procs - 1, signal.SIGSTOP)
    try:
        result = mesh.flush(timeout=0.3)
    finally:
        mesh.kill(procs - 1, signal.SIGCONT)
    assert result.status == "timeout" and result.missing_ranks == (procs - 1,)
    mesh.stop()


def test_stop_racing_eof(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """Stop right after a burst: bytes still in the pipes are drained, not dropped."""
    s = fake_procs.script().flood(100_000, 30).partial()
    mesh = meshlog.spawn([s] * procs, env="prod")
    mesh.stop().assert_clean()  # no wait: the stop meets the flood in flight


def test_two_hosts(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """Two bootstrap hosts: one FileAppender each, one client for all."""
    mesh = meshlog.spawn(
        [fake_procs.interleaver(lines=40) for _ in range(max(procs, 2))], hosts=2, env="prod"
    )
    mesh.wait_scripts()
    report = mesh.stop()
    assert len(report.files) == 4


@pytest.mark.meshlog_fault("slow_client", delay=0.01)
def test_kill_under_backpressure(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """A child killed while backpressure holds its pipe full: the tee drains the pipe to
    EOF, so the files hold every line it wrote; only its client tail may be lost."""
    mesh = meshlog.spawn([fake_procs.flooder(lines=8000, line_bytes=200)] * procs, env="prod")
    poll_until(
        lambda: in_flight(mesh, 0) > 400_000, what="the pipeline behind the slow client to fill"
    )
    mesh.kill(0, signal.SIGKILL)
    for r in range(1, procs):
        mesh.kill(r, signal.SIGKILL)
    mesh.stop().assert_clean()


@pytest.mark.meshlog_fault("slow_files", delay=0.002)
def test_slow_disk_at_stop(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """Closing the FileAppender writes every batch already queued, however slow the disk."""
    s = fake_procs.script().flood(3000, 40).partial()
    mesh = meshlog.spawn([s] * procs, env="prod", read_log_buffer=10)
    mesh.wait_scripts()
    mesh.stop().assert_clean()


@pytest.mark.meshlog_fault("slow_files", delay=0.003)
def test_slow_disk_holds_the_flood(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """A disk slower than the children: the file writer's queue stays bounded (a full
    queue holds the tee, and so the child's pipe, as the client path does), and every
    line still reaches the files and the client."""
    mesh = meshlog.spawn([fake_procs.flooder(lines=12_000, line_bytes=40)] * procs, env="prod")
    mesh.wait_scripts()
    mesh.stop().assert_clean()


def test_grandchild_holds_stdout(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """A child that leaves behind a grandchild holding its stdout open: the child's
    descendants belong to the mesh, so the stack names the holder, ends it, and the
    child's final partial line still arrives; nothing outlives the mesh (SPEC 3.6)."""
    meshlog.require("journal", "the stack names the process that held the pipe in its journal")
    s = fake_procs.script().line().grandchild(stream="stdout").line(stream="stderr").partial()
    mesh = meshlog.spawn([s] * procs, env="prod")
    mesh.wait_scripts()
    report = mesh.stop()
    report.assert_clean()
    for rank in mesh.ranks:
        events = read_progress(mesh.progress(rank)).events
        pid = int(next(e for e in events if e.startswith("grandchild ")).split()[2])
        held = [e for e in journal_events(mesh, Ev.PIPE_HELD) if e["rank"] == rank]
        assert [(e["stream"], e["pid"]) for e in held] == [("stdout", pid)], held


@pytest.mark.meshlog_fault("close_channel", rank=0)
def test_channel_closed_early(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """A channel that closes under a live child: the client misses at most that rank's last
    batch (none at the strict level: the reference stack's host delivers the rest itself),
    the other ranks and the files miss nothing."""
    mesh = meshlog.spawn([fake_procs.slow_drip(lines=20, interval=0.005)] * procs, env="prod")
    mesh.wait_scripts()
    report = mesh.stop()
    assert all(x.rank == 0 and x.where == "client" for x in report.lost), report.lost


@pytest.mark.meshlog_fault("file_write_error")
def test_disk_full(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """Failed file writes are journaled and counted; streaming to the client is unharmed."""
    mesh = meshlog.spawn([fake_procs.interleaver(lines=30)] * procs, env="prod")
    mesh.wait_scripts()
    report = mesh.stop()
    assert all(
        report.stream(r, "stdout").delivered == report.stream(r, "stdout").emitted
        for r in mesh.ranks
    )
    assert any(e["ev"] == Ev.FILE_WRITE_ERROR for e in mesh.journal())


@pytest.mark.meshlog_fault("sigkill_forwarder", rank=0)
def test_forwarder_killed_before_stop(
    meshlog: MeshHarness, fake_procs: FakeProcs, procs: int
) -> None:
    """A rank whose forwarder dies (with its process) just before stop: stop neither hangs
    nor waits for its ack; the other ranks lose nothing."""
    s = fake_procs.script().line().partial().hang()
    mesh = meshlog.spawn([s] * procs, env="prod")
    poll_until(
        lambda: all(b"\nhang " in mesh.progress(r) for r in mesh.ranks), what="children to hang"
    )
    mesh.stop()


@pytest.mark.meshlog_fault("hang", rank=0)
def test_hang_fault(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """A rank that never finishes its script on its own is quiesced by stop, tail and all."""
    mesh = meshlog.spawn([fake_procs.partial_line_writer(lines=5)] * procs, env="prod")
    poll_until(lambda: b"\nhang " in mesh.progress(0), what="rank 0 to hang")
    report = mesh.stop()
    assert report.partial_line_forwarded[0, "stdout"]


def test_barrier_between_phases(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int) -> None:
    """A completed barrier means every ack came in: all phase-one lines have arrived."""
    s = fake_procs.script().flood(300, 50).barrier(timeout=20).line()
    mesh = meshlog.spawn([s] * procs)
    result = flush_until_everyone_waited(mesh, procs)
    assert result.completed and not result.missing_ranks, result
    mesh.wait_scripts()
    mesh.stop().assert_clean()


@pytest.mark.meshlog_fault("slow_client", delay=3.0)
def test_write_to_an_exited_childs_connection(
    meshlog: MeshHarness, fake_procs: FakeProcs, procs: int
) -> None:
    """A child ends while the slow client has not yet read what it sent; the driver then
    writes to its connection (SetMode), which fails: the child is gone. What it sent before
    it went (its lines and its Bye) is still read to the end, never thrown away."""
    meshlog.require("set_mode", "the test changes the mode of a running mesh")
    s = fake_procs.script().line().sleep(0.3).flood(60, 40).partial()
    mesh = meshlog.spawn([s] * procs, env="prod")
    mesh.wait_scripts()
    mesh.set_mode(stream_to_client=True)  # written to every exited child's connection
    mesh.stop().assert_clean()


@pytest.mark.parametrize(
    "attack",
    [
        pytest.param(a, marks=pytest.mark.meshlog_fault("hostile_peer", rank=0, attack=a))
        for a in HOSTILE_ATTACKS
    ],
)
def test_hostile_peer(meshlog: MeshHarness, fake_procs: FakeProcs, procs: int, attack: str) -> None:
    """A local peer of the same user attacks rank 0's sockets (its channel and the client)
    without the mesh's secret: only its own connection goes, every rank (rank 0 included)
    loses nothing, and the barriers complete."""
    s = fake_procs.script().flood(50, 40).barrier(timeout=20).flood(50, 40).partial()
    mesh = meshlog.spawn([s] * procs, env="prod")
    assert mesh.hostile and set(mesh.hostile.values()) == {"closed"}, (
        f"{attack}: the attacked sockets did {mesh.hostile}"
    )
    result = flush_until_everyone_waited(mesh, procs)
    assert result.completed, result
    mesh.wait_scripts()
    mesh.stop().assert_clean()
