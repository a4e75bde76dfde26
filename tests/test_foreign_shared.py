"""What the foreign backends (Monarch, Ray, torchrun) share, `pytest_meshlog/foreign/`, run
without any runtime: a real helper process on the real request/answer link (answers, a
failing call, a call that never answers, a helper that exits), the rank bookkeeping's
deadline message and kill record, and the count-only crediting of merged rows.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pytest_meshlog.foreign.credit import credit_rows
from pytest_meshlog.foreign.helper_link import HelperLink, Wording
from pytest_meshlog.foreign.ranks import kill_rank, wait_for_exits
from pytest_meshlog.stack import ExitInfo, MeshError

HELPER = textwrap.dedent(
    """
    import os, sys, time
    from pytest_meshlog.foreign.helper_link import open_reply, serve

    class Driver:
        def echo(self, value):
            return {"value": value}

        def boom(self):
            raise ValueError("no such mesh")

        def hang(self):
            time.sleep(60)
            return {}

        def quit(self):
            os._exit(3)

    reply = open_reply(sys.argv[1])
    try:
        serve(Driver(), sys.stdin, reply)
    finally:
        reply.close()
    """
)
WORDING = Wording(
    helper="the test helper",
    call="test call ",
    unit=" s",
    no_answer=lambda what, took, wait: f"{what} did not return within {wait:.1f} s",
)
CALLS = {"hang": "Driver.hang()", "quit": "Driver.quit()"}


class Harness:
    """The link and its `on_lost`, as a backend holds them."""

    def __init__(self, tmp_path: Path) -> None:
        self.lost: list[int] = []
        self.link = HelperLink(WORDING, CALLS, self.kill)
        script = tmp_path / "helper.py"
        script.write_text(HELPER)
        with open(tmp_path / "out", "ab") as out, open(tmp_path / "err", "ab") as err:
            self.link.start(
                [sys.executable, str(script)],
                stdout=out,
                stderr=err,
                env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parent.parent)},
                cwd=tmp_path,
            )
        assert self.link.proc is not None
        self.pid = self.link.proc.pid

    def kill(self) -> None:
        proc = self.link.take()
        if proc is not None:
            self.lost.append(proc.pid)
            proc.kill()
            proc.wait(10)
            assert proc.stdin is not None
            proc.stdin.close()

    def close(self) -> None:
        self.kill()
        self.link.close()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        harness.close()


def test_answers_failures_and_exit_on_the_link(h: Harness) -> None:
    assert h.link.call("echo", 30, value=[1, "x"])["value"] == [1, "x"]
    with pytest.raises(MeshError, match=r"^test call boom failed after \d+\.\d s: ValueError"):
        h.link.call("boom", 30)
    assert h.link.call("exit", 30) == {"ok": True}
    assert h.link.proc is not None
    assert h.link.proc.wait(30) == 0
    assert h.lost == []


def test_a_call_that_never_answers_names_the_call_and_the_wait(h: Harness) -> None:
    with pytest.raises(MeshError, match=r"^Driver.hang\(\) did not return within 0.5 s$"):
        h.link.call("hang", 0.5)
    assert h.lost == [h.pid]  # on_lost ran: the helper is gone, later calls refused
    assert h.link.proc is None and not psutil.pid_exists(h.pid)
    with pytest.raises(MeshError, match="was never called: the test helper had exited"):
        h.link.call("echo", 5, value=1)


def test_a_helper_that_exits_during_a_call_is_reported_with_its_status(h: Harness) -> None:
    with pytest.raises(MeshError, match=r"^the test helper exited \(3\) during Driver.quit"):
        h.link.call("quit", 30)
    assert h.lost == [h.pid]


def test_the_wait_for_ranks_names_those_still_running() -> None:
    ends = {0: ExitInfo(0, None), 1: None, 2: None}
    with pytest.raises(MeshError, match=r"^ranks \[1, 2\] still running after 0\.1s$"):
        wait_for_exits([0, 1, 2], ends.get, 0.1)
    rounds: list[int] = []
    done = wait_for_exits([0], ends.get, 5, each_round=lambda: rounds.append(1))
    assert done == {0: ExitInfo(0, None)} and rounds == [1]


def test_a_pause_is_sent_but_not_recorded_as_the_ranks_end() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        killed: dict[int, int] = {}
        kill_rank(killed, {0: proc.pid}, 0, signal.SIGSTOP)
        kill_rank(killed, {0: proc.pid}, 0, signal.SIGCONT)
        assert killed == {}
        kill_rank(killed, {0: proc.pid}, 0, signal.SIGKILL)
        assert killed == {0: int(signal.SIGKILL)}
        assert proc.wait(10) == -signal.SIGKILL
        kill_rank(killed, {0: proc.pid}, 0, signal.SIGKILL)  # gone: no error
    finally:
        proc.kill()
        proc.wait(10)


def test_merged_rows_are_credited_in_rank_order_and_a_surplus_to_the_first() -> None:
    delivered: dict[tuple[int, str], list[bytes]] = {(r, "stdout"): [] for r in (0, 1)}
    emitted = {(0, "stdout"): 1, (1, "stdout"): 2}
    credit_rows(delivered, "stdout", [0, 1], [(3, b"a"), (1, b"b")], emitted)
    assert delivered == {(0, "stdout"): [b"a", b"b"], (1, "stdout"): [b"a", b"a"]}
