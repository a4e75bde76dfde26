"""The stack's bounded waits (`stack.waits`): each ends by its deadline, with a real process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from pytest_meshlog.stack.waits import poll_until, process_exit


def test_process_exit_waits_for_a_real_child() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)  # fmt: skip
    try:
        alive = asyncio.run(process_exit(proc.pid, time.monotonic() + 0.2))
        assert alive is False and proc.poll() is None  # the deadline ended the wait
        assert proc.stdin is not None
        proc.stdin.close()  # the child reads EOF and exits
        assert asyncio.run(process_exit(proc.pid, time.monotonic() + 30.0)) is True
        assert proc.wait(5) == 0
        assert asyncio.run(process_exit(proc.pid, time.monotonic() + 1.0)) is True  # gone
    finally:
        proc.kill()
        proc.wait()


def test_poll_until_holds_or_ends_at_its_deadline() -> None:
    looks: list[float] = []

    def never() -> bool:
        looks.append(time.monotonic())
        return False

    assert asyncio.run(poll_until(never, time.monotonic() + 0.2)) is False
    assert len(looks) >= 2  # looked again before giving up
    flips = iter([False, False, True])
    assert asyncio.run(poll_until(lambda: next(flips), time.monotonic() + 30.0)) is True
