"""`stop(timeout)` against a frozen host (issue 11, finding 8): the deadline is kept, and
ranks whose host did not answer are reported as such (typed), never as crashed."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from .stack_helpers import child, events, mesh, wait_delivered

pytestmark = pytest.mark.timeout(120)


def test_a_frozen_host_is_a_missed_deadline_not_a_crash(tmp_path: Path) -> None:
    with mesh(tmp_path, [child("hang"), child("hang")]) as m:
        for rank in (0, 1):
            wait_delivered(m, rank, "stdout", 1)
        host = m._hosts[0].proc
        os.kill(host.pid, signal.SIGSTOP)
        try:
            outcome = m.stop(3)
        finally:
            if host.poll() is None:
                os.kill(host.pid, signal.SIGKILL)
        print(f"stop(3) with a frozen host returned after {outcome.duration_s:.2f} s")
        assert outcome.unanswered_ranks == (0, 1)
        assert m.unanswered == {
            0: "host0 did not answer within the stop deadline (3 s)",
            1: "host0 did not answer within the stop deadline (3 s)",
        }
        assert 0 not in outcome.exits and 1 not in outcome.exits
        unanswered = [(p.host, p.ranks) for p in outcome.problems if p.kind == "host_unanswered"]
        assert unanswered == [(0, (0, 1))], outcome.problems
        assert host.poll() is not None  # killed at the deadline, not left frozen


FROZEN_HOST_TEST = """
import os, signal

def test_frozen(meshlog, fake_procs):
    mesh = meshlog.spawn([fake_procs.script().line().partial().hang()] * 2, env="prod")
    mesh.flush(timeout=10)
    os.kill(mesh._client._hosts[0].proc.pid, signal.SIGSTOP)
    mesh.stop(timeout=3)
"""


def run_frozen(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    """A pytest session of one test that freezes a host: its report is what is judged."""
    pytester.makepyfile(test_frozen=source)
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--meshlog-no-leak-check",
        timeout=90,
    )  # fmt: skip


def test_the_report_says_end_unknown_not_crashed(pytester: pytest.Pytester) -> None:
    result = run_frozen(pytester, FROZEN_HOST_TEST)
    text = result.stdout.str()
    assert "did not answer within the stop deadline" in text
    assert "(end unknown: host0 did not answer within the stop deadline (3 s))" in text
    assert "crashed: exit None" not in text
    assert "(crashed" not in text
    result.assert_outcomes(errors=1, passed=1)


FROZEN_AFTER_FILE_WRITES = """
import os, signal
from pytest_meshlog.scenario_tools import poll_until

def test_frozen(meshlog, fake_procs, tmp_path):
    logs = tmp_path / "logs"
    script = fake_procs.script()
    for _ in range(30):
        script = script.line()
    mesh = meshlog.spawn([script.hang()], env="prod", log_dir=logs)
    stdout = next(iter(logs.glob("*_host0_*.stdout")))
    poll_until(lambda: stdout.read_bytes().count(b"\\n") == 30, what="30 lines in the file")
    os.kill(mesh._client._hosts[0].proc.pid, signal.SIGSTOP)
    report = mesh.stop(timeout=2)
    assert report.files == tuple(sorted(str(p) for p in logs.iterdir())), report.files
    assert report.stream(0, "stdout").in_files == 30
    assert not [x for x in report.lost if x.where == "file"], report.lost
    assert not [f for f in report.findings if f.kind == "files"], report.findings
"""


def test_a_frozen_hosts_files_are_still_read(pytester: pytest.Pytester) -> None:
    """A host frozen after its file writer wrote never answers stop, but its journal names
    the files it created: they are read and judged (its 30 lines are there), and the report
    does not say that no files were created. The teardown still fails: the host did not
    answer (and its tees never saw EOF)."""
    result = run_frozen(pytester, FROZEN_AFTER_FILE_WRITES)
    text = result.stdout.str()
    assert "did not answer within the stop deadline" in text
    assert "none were created" not in text
    result.assert_outcomes(errors=1, passed=1)


@pytest.mark.parametrize("timeout", [0.5, 1.0, 2.0])
def test_every_part_of_a_short_stop_ends_by_its_deadline(tmp_path: Path, timeout: float) -> None:
    """The host's share of `stop(timeout)`, and its files' share of that, end by the
    driver's deadline, however short it is: a floor of 1 s for the host and of 2 s for its
    files made a well-behaved host answer after the driver had given up on it (reported
    `host_unanswered`, killed). Deadlines are `time.monotonic()`, one clock for every
    process of the machine, so the journals compare them exactly."""
    with mesh(
        tmp_path, [child("hang"), child("hang")], env="prod", log_dir=str(tmp_path / "logs")
    ) as m:
        for rank in (0, 1):
            wait_delivered(m, rank, "stdout", 1)
        m.stop(timeout)
        (begin,) = events(m, "stop_begin")
        (host,) = events(m, "host_stopping")
        (files,) = events(m, "file_appender_closed")
    assert begin["deadline"] == pytest.approx(begin["t"] + timeout)
    assert host["deadline"] <= begin["deadline"], (host, begin)
    assert files["deadline"] <= host["deadline"], (files, host)
