"""The reference stack's teardown rules (SPEC 1.10, 1.11), with real processes."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from pytest_meshlog.stack import BarrierOutcome, ConfigError, LoggingMeshClient, StackConfig

from .stack_helpers import child, events, mesh, wait_delivered


def expected_lines(rank: int, n: int) -> dict[str, list[bytes]]:
    return {
        "stdout": [f"[{rank}] out {rank} {i}".encode() for i in range(n)]
        + [f"[{rank}] tail-out".encode()],
        "stderr": [f"[{rank}] err {rank} {i}".encode() for i in range(n)]
        + [f"[{rank}] tail-err".encode()],
    }


def test_happy_path_delivers_every_line_and_both_partial_tails(tmp_path: Path) -> None:
    with mesh(tmp_path, [child("lines", 5) for _ in range(4)], hosts=2) as m:
        m.wait_children(20)
        outcome = m.stop(20)
        assert outcome.problems == []
        for rank in range(4):
            for stream, lines in expected_lines(rank, 5).items():
                assert m.delivered[(rank, stream)] == lines
            for stream in ("stdout", "stderr"):
                assert len(events(m, "flush_none_posted", rank=rank, stream=stream)) == 1
                assert len(events(m, "partial_forwarded", rank=rank, stream=stream)) == 1
        assert {e["rank"] for e in events(m, "forwarder_bye")} == {0, 1, 2, 3}
        assert {e["src"] for e in events(m, "child_spawned")} == {"host0", "host1"}


def test_stop_quiesces_a_running_child_so_its_partial_line_arrives(tmp_path: Path) -> None:
    with mesh(tmp_path, [child("hang"), child("hang")]) as m:
        for rank in (0, 1):
            wait_delivered(m, rank, "stdout", 1)  # "hanging" is out; "partial" waits for EOF
        outcome = m.stop(20)
        assert outcome.problems == []
        for rank in (0, 1):
            assert m.delivered[(rank, "stdout")] == [
                f"[{rank}] hanging".encode(),
                f"[{rank}] partial".encode(),
            ]
            assert outcome.exits[rank].killed_by_stack is None
        assert outcome.unconfirmed_ranks == ()


def test_sigkilled_child_loses_at_most_its_tail_and_never_hangs_stop(tmp_path: Path) -> None:
    with mesh(tmp_path, [child("sigkill", 50), child("lines", 5)]) as m:
        m.wait_children(20)
        outcome = m.stop(20)
        assert outcome.exits[0].signal == signal.SIGKILL
        got = m.delivered.get((0, "stdout"), [])
        emitted = [f"[0] out 0 {i}".encode() for i in range(50)]
        assert got == emitted[: len(got)], "a crash may only lose a suffix"
        assert 0 in outcome.unconfirmed_ranks
        assert events(m, "forwarder_lost", rank=0)
        assert m.delivered[(1, "stdout")] == expected_lines(1, 5)["stdout"]


def test_exit_code_is_reported(tmp_path: Path) -> None:
    with mesh(tmp_path, [child("exit3")]) as m:
        exits = m.wait_children(20)
        assert exits[0].code == 3


def test_barrier_covers_everything_written_before_it(tmp_path: Path) -> None:
    with mesh(tmp_path, [child("phases") for _ in range(3)]) as m:
        # phase1 is written before each child blocks in wait_barrier; give it a barrier
        # only once the tee has read it, which a barrier itself proves: retry until seen.
        for _ in range(200):
            result = m.flush(10)
            assert result.completed, result
            if all(m.delivered.get((r, "stdout")) for r in range(3)):
                break
        for r in range(3):
            assert m.delivered[(r, "stdout")][0] == f"[{r}] phase1".encode()
        # a child may enter wait_barrier only after that barrier: flush until all are done
        for _ in range(2000):
            if len(m.exits) == 3:
                break
            assert m.flush(10).completed
        m.wait_children(20)
        m.stop(20)
        for r in range(3):
            assert m.delivered[(r, "stdout")][1].startswith(f"[{r}] phase2 after v".encode())


def test_barrier_timeout_names_the_ranks_that_did_not_ack(tmp_path: Path) -> None:
    with mesh(tmp_path, [child("hang"), child("hang"), child("hang")]) as m:
        m.kill(1, signal.SIGSTOP)  # returns once every thread of rank 1 is stopped
        try:
            result = m.flush(timeout=0.5)
        finally:
            m.kill(1, signal.SIGCONT)
        assert result.status == "timeout", (result, m.read_journal())
        assert result.missing_ranks == (1,)
        assert result.acked_ranks == (0, 2)
        assert events(m, "barrier_timeout", version=result.version)[0]["missing"] == [1]
        m.stop(20)


def test_a_second_barrier_answers_the_first_as_superseded(tmp_path: Path) -> None:
    with mesh(tmp_path, [child("hang"), child("hang")]) as m:
        m.kill(0, signal.SIGSTOP)
        results: dict[int, BarrierOutcome] = {}
        threads = []
        for n in (1, 2):
            t = threading.Thread(target=lambda n=n: results.__setitem__(n, m.flush(timeout=20)))
            t.start()
            threads.append(t)
            deadline = time.monotonic() + 20
            while len(events(m, "barrier_started")) < n:  # both barriers open while rank 0 sleeps
                assert time.monotonic() < deadline, f"barrier {n} never started"
                time.sleep(0.005)
        m.kill(0, signal.SIGCONT)
        for t in threads:
            t.join(25)
            assert not t.is_alive(), "a barrier's caller never heard back"
        assert results[1].status == "superseded"
        assert results[2].completed
        m.stop(20)


def test_small_read_log_buffer_bounds_every_batch(tmp_path: Path) -> None:
    with mesh(tmp_path, [child("flood", 5000)], read_log_buffer=7) as m:
        m.wait_children(30)
        m.stop(20)
        assert len(m.delivered[(0, "stdout")]) == 5000
        assert m.client.max_batch <= 7


@pytest.mark.parametrize(
    ("env", "force", "files_expected"),
    [("local", False, False), ("local", True, True), ("test", True, False), ("prod", False, True)],
)
def test_file_appender_gate_and_contents(
    tmp_path: Path, env: str, force: bool, files_expected: bool
) -> None:
    log_dir = tmp_path / "logs"
    with mesh(
        tmp_path,
        [child("lines", 4), child("hang")],
        env=env,
        force_file_log=force,
        log_dir=str(log_dir),
    ) as m:
        wait_delivered(m, 1, "stdout", 1)
        # rank 0 ends by itself; a stop before its first write would pre-empt it
        wait_delivered(m, 0, "stdout", len(expected_lines(0, 4)["stdout"]))
        outcome = m.stop(20)
        if not files_expected:
            assert outcome.files == []
            assert events(m, "file_appender_gated")
            assert not log_dir.exists() or not any(log_dir.iterdir())
            return
        assert len(outcome.files) == 2 and all(f.startswith(str(log_dir)) for f in outcome.files)
        stdout = next(Path(f) for f in outcome.files if f.endswith(".stdout"))
        lines = stdout.read_bytes().splitlines()
        assert [ln for ln in lines if ln.startswith(b"[0]")] == expected_lines(0, 4)["stdout"]
        assert [ln for ln in lines if ln.startswith(b"[1]")] == [b"[1] hanging", b"[1] partial"]
        base = "monarch_log" if env == "local" else "dedicated_log_monarch"
        assert stdout.name.startswith(f"{base}_host0_")


def test_bad_knob_is_a_clear_error_before_anything_spawns(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"HYPERACTOR_READ_LOG_BUFFER='abc'"):
        StackConfig.from_env({"HYPERACTOR_READ_LOG_BUFFER": "abc"})
    with pytest.raises(ConfigError, match="aggregate_window_sec"):
        LoggingMeshClient(StackConfig(), stream_to_client=False, aggregate_window_sec=3)


def test_nothing_outlives_the_mesh(tmp_path: Path) -> None:
    me = psutil.Process(os.getpid())
    before = {p.pid for p in me.children(recursive=True)}
    with mesh(tmp_path, [child("hang"), child("sigkill", 2)], hosts=2) as m:
        sockdir = m.sockdir
        assert {p.pid for p in me.children(recursive=True)} - before
    assert {p.pid for p in me.children(recursive=True)} - before == set()
    assert not os.path.exists(sockdir)
