"""Stop problems are typed (`stack.outcomes.StopProblem`): the harness decides by kind,
never by the words of a message (issue 12, item 3)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from .stack_helpers import child, events, mesh

pytestmark = pytest.mark.timeout(120)

# A host that dies while it stops its ranks, its last words on stderr quoting the very
# phrases the harness once filtered stop problems by: the loss of the host is reported.
HOST_DIES_AT_STOP = """
import os, signal

def test_host_dies(meshlog, fake_procs):
    mesh = meshlog.spawn([fake_procs.script().line().hang()], env="prod")
    mesh.flush(timeout=10)
    host = mesh._client._hosts[0]
    with open(host.console[1], "ab") as err:
        err.write(b"fatal: the pre-stop barrier ended without confirming anything\\n")
    os.kill(host.proc.pid, signal.SIGKILL)
    host.proc.wait()
    mesh.stop(timeout=5)
"""


def test_a_host_lost_at_stop_is_reported_whatever_its_stderr_says(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_host=HOST_DIES_AT_STOP)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--meshlog-no-leak-check",
        timeout=90,
    )  # fmt: skip
    text = result.stdout.str()
    assert "host0 went away" in text, text
    assert "pre-stop barrier ended without confirming anything" in text
    result.assert_outcomes(passed=1, errors=1)  # the teardown check fails: a stop problem


def test_the_harness_judges_stop_problems_by_kind() -> None:
    from pytest_meshlog.harness import _judged_stop_problems
    from pytest_meshlog.stack import StopProblem

    problems = [
        StopProblem("barrier_incomplete", (1,), detail="v2 timeout"),
        StopProblem("host_lost", (0, 1), host=0, detail="host0 went away: without confirming"),
        StopProblem("tails_unconfirmed", (0, 1, 2)),
        StopProblem("backend_output", streams=("stdout",), detail="pre-stop barrier"),
    ]
    judged = _judged_stop_problems(problems, abrupt=frozenset({1}))
    assert [(p.kind, p.ranks) for p in judged] == [
        ("host_lost", (0, 1)),  # kept, whatever its detail says
        ("tails_unconfirmed", (0, 2)),  # rank 1's script ended abruptly: no Bye expected
        ("backend_output", ()),
    ]
    assert judged[1].message == (
        "ranks [0, 2] exited cleanly without confirming that their final lines were relayed "
        "(no Bye from their forwarder)"
    )
    assert _judged_stop_problems([StopProblem("tails_unconfirmed", (1,))], frozenset({1})) == ()


def test_a_stop_problem_reads_as_its_message() -> None:
    from pytest_meshlog.stack import StopProblem

    p = StopProblem("barrier_incomplete", (3, 4), detail="v7 timeout")
    assert str(p) == p.message == "pre-stop barrier v7 timeout: missing ranks [3, 4]"


def test_without_forwarding_a_child_ended_by_stop_is_ended_by_the_stack(tmp_path: Path) -> None:
    """With log forwarding off there is no forwarder to ask to stop: the host ends the
    child with SIGTERM, and says it did (`child_killed`, `killed_by_stack`). It said
    nothing, so the exit read as a signal from outside."""
    with mesh(tmp_path, [child("hang")], enable_log_forwarding=False) as m:
        outcome = m.stop(10)
        info = outcome.exits[0]
        assert (info.signal, info.killed_by_stack) == (signal.SIGTERM, "stopped with SIGTERM")
        assert events(m, "child_killed", rank=0, signal=signal.SIGTERM)
