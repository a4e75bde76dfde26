"""The stall watch, against real stopped processes: a process that was SIGSTOPped (as a
stalled machine stops every process at once) says so, with how long, when a wait of its
ran out; one that ran does not. Every freeze here is a real SIGSTOP and SIGCONT sent by a
helper process, since a process cannot resume itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

from pytest_meshlog.scenario_tools import poll_until
from pytest_meshlog.stack.stalls import LATE, TICK, is_stall, watch

from .test_plugin import run_sub

FREEZE_S = 1.5

# Told "go", stops the target, holds it stopped FREEZE_S, resumes it (always), and exits.
_FREEZER = textwrap.dedent(
    """
    import os, signal, sys, time
    target, seconds = int(sys.argv[1]), float(sys.argv[2])
    for _ in sys.stdin:
        os.kill(target, signal.SIGSTOP)
        try:
            time.sleep(seconds)  # the length of the freeze itself
        finally:
            os.kill(target, signal.SIGCONT)
        break
    """
)


class Freezer:
    """Freezes a process (by default this one) for FREEZE_S once `freeze()` is called."""

    def __init__(self, pid: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _FREEZER, str(pid), str(FREEZE_S)], stdin=subprocess.PIPE
        )

    def freeze(self) -> float:
        """Stop the target, return once it runs again: the freeze's length, as the caller
        measured it (the caller is the target when it freezes itself)."""
        assert self.proc.stdin is not None
        t0 = time.monotonic()
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()
        self.proc.wait(30)
        return time.monotonic() - t0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def freezer() -> Iterator[Freezer]:
    f = Freezer(os.getpid())
    try:
        yield f
    finally:
        f.close()


@pytest.fixture
def watching() -> Iterator[None]:
    release = watch().hold()
    try:
        yield
    finally:
        release()


def test_a_late_wake_up_is_a_stall_only_if_the_process_was_not_running() -> None:
    assert is_stall(TICK + LATE + 0.5, cpu_s=0.0)
    assert not is_stall(TICK + LATE + 0.5, cpu_s=1.5)  # it ran: a thread held the GIL
    assert not is_stall(TICK + LATE - 0.01, cpu_s=0.0)  # late, but not by enough


def test_a_stopped_process_journals_the_span_it_was_not_run() -> None:
    """A separate process (so this session is never stopped): its watch records one stall
    as long as the freeze, with almost no CPU in it."""
    script = textwrap.dedent(
        """
        import json, sys, time
        from pytest_meshlog.stack.stalls import watch
        release = watch().hold()
        t0 = time.monotonic()
        print("ready", flush=True)
        sys.stdin.readline()  # the freeze happens before this line comes
        stalls = watch().between(t0)
        release()
        print(json.dumps([[s.seconds, s.cpu_s] for s in stalls]), flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        assert proc.stdout.readline() == b"ready\n"
        frozen = Freezer(proc.pid)
        try:
            span = frozen.freeze()
        finally:
            frozen.close()
        proc.stdin.write(b"report\n")
        proc.stdin.close()
        stalls = json.loads(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()
    assert len(stalls) == 1, stalls
    seconds, cpu_s = stalls[0]
    assert FREEZE_S - 0.2 <= seconds <= span + 2 * TICK, (seconds, span)
    assert cpu_s < seconds / 2


def test_a_wait_that_runs_out_in_a_freeze_says_the_process_was_not_run(
    watching: None, freezer: Freezer
) -> None:
    frozen: list[float] = []

    def done() -> bool:  # the first look freezes this process, then nothing ever holds
        if not frozen:
            frozen.append(freezer.freeze())
        return False

    with pytest.raises(TimeoutError) as caught:
        poll_until(done, timeout=0.5, what="a condition that never holds")
    message = str(caught.value)
    assert message.startswith("timed out after 0.5s waiting for a condition that never holds")
    found = re.search(r"this process was not run for (\d+\.\d) s of that wait", message)
    assert found, message
    assert FREEZE_S - 0.2 <= float(found.group(1)) <= frozen[0] + 0.2, message


def test_a_wait_this_process_ran_through_says_nothing_of_stalls(watching: None) -> None:
    with pytest.raises(TimeoutError) as caught:
        poll_until(lambda: False, timeout=0.2, what="nothing")
    assert str(caught.value) == "timed out after 0.2s waiting for nothing"


def test_the_watch_thread_ends_with_its_last_holder() -> None:
    def running() -> bool:
        return any(t.name == "meshlog-stall-watch" for t in threading.enumerate())

    first, second = watch().hold(), watch().hold()
    assert running()
    first()
    first()  # a second release of the same hold changes nothing
    assert running()
    second()
    assert not running()  # joined before the release returns


PYTESTER_TEST = """
import os, subprocess, sys

FREEZER = {freezer!r}

def test_frozen(meshlog, fake_procs):
    mesh = meshlog.spawn([fake_procs.script().line()])
    mesh.wait_scripts()
    helper = subprocess.Popen(
        [sys.executable, "-c", FREEZER, str(os.getpid()), "{seconds}"], stdin=subprocess.PIPE
    )
    helper.communicate(b"go\\n", timeout=30)
    assert False, "the test failed after a freeze"

def test_not_frozen(meshlog, fake_procs):
    mesh = meshlog.spawn([fake_procs.script().line()])
    mesh.wait_scripts()
    assert False, "the test failed without a freeze"
"""


def test_a_failed_test_says_how_long_its_process_was_not_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PYTESTER_TEST.format(freezer=_FREEZER, seconds=FREEZE_S))
    result = run_sub(pytester)
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    frozen, not_frozen = out.split("_ test_not_frozen _")
    assert "meshlog: this process was not run" in frozen
    found = re.search(r"not run for (\d+\.\d) s from \d\d:\d\d:\d\d", frozen)
    assert found and float(found.group(1)) >= FREEZE_S - 0.2, frozen
    assert "meshlog: this process was not run" not in not_frozen
