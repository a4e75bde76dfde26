"""The reference stack's strong barrier (README, "Strong barriers"): a completed barrier
covers every line the child wrote before it began, also lines still in the pipe, which the
host has not read yet. The host is frozen while the child writes, so those lines wait in
the pipe when the barrier begins; a forwarder that acked on its own in-band marker alone
(the spec's barrier) would complete it without them."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from pytest_meshlog.stack import ChildSpec

from .stack_helpers import SIMPLE, mesh, wait_delivered

pytestmark = pytest.mark.timeout(120)
LINES = 50


def test_a_barrier_covers_lines_still_in_the_pipe(tmp_path: Path) -> None:
    go = tmp_path / "go"
    spec = ChildSpec([sys.executable, SIMPLE, "on-go", str(LINES), str(go)])
    with mesh(tmp_path, [spec]) as m:
        wait_delivered(m, 0, "stdout", 1)  # "ready": the host reads the pipe
        host = m._hosts[0].proc
        os.kill(host.pid, signal.SIGSTOP)
        try:
            go.touch()
            deadline = time.monotonic() + 30
            while not Path(f"{go}.done").exists():  # written: in the pipe, unread
                assert time.monotonic() < deadline, "the child did not write its lines"
                time.sleep(0.005)
            seen: list[tuple[bool, int]] = []

            def flush() -> None:
                result = m.flush(30)
                seen.append((result.completed, len(m.delivered.get((0, "stdout"), []))))

            caller = threading.Thread(target=flush)
            caller.start()
            caller.join(0.5)  # a barrier that does not wait for the host ends here
        finally:
            os.kill(host.pid, signal.SIGCONT)
        caller.join(30)
        assert seen, "the barrier was not answered within 30 s of the host's SIGCONT"
        completed, delivered = seen[0]
        assert completed
        assert delivered == 1 + LINES, (
            f"the barrier completed with {delivered - 1} of the {LINES} lines the child "
            "wrote before it began"
        )
