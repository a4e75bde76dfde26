"""Finding, checking and killing the processes a foreign runtime started for one mesh.

The runtimes start processes that leave the tree of the one the harness started (new
sessions, daemons), and a process that dies first orphans what it started: so each
backend remembers what it saw below its process while it ran, and at the end kills its
process's session and everything it remembered, then waits for them, each wait bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Collection

import psutil

PROC_WAIT_S = 10.0
"""How long the killed process itself gets to be reaped."""
OTHERS_WAIT_S = 5.0
"""How long the other killed processes get to be gone."""


def below(proc: subprocess.Popen[bytes] | None) -> list[psutil.Process]:
    """Every process below `proc` now (none when it is gone or was never started)."""
    if proc is None:
        return []
    with contextlib.suppress(psutil.Error):
        return psutil.Process(proc.pid).children(recursive=True)
    return []


def is_running(proc: psutil.Process | None) -> bool:
    """`proc` still runs: started, not ended, not a zombie waiting for its parent."""
    if proc is None:
        return False
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def pid_running(pid: int | None) -> bool:
    """The process of `pid` runs and is not a zombie (for a pid no handle was kept of)."""
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def end_session(
    proc: subprocess.Popen[bytes] | None, others: Callable[[], Collection[psutil.Process]]
) -> int | None:
    """SIGKILL `proc`'s session, then each process `others()` names (asked once the
    session is killed: Ray's look-up finds what outlived it), then reap `proc` (within
    `PROC_WAIT_S`) and wait for those others (within `OTHERS_WAIT_S`); `proc`'s exit
    status, None when there was no `proc` or it was not reaped in time. The others are
    psutil handles, so a pid reused since is never killed."""
    if proc is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    left = list(others())
    for other in left:
        with contextlib.suppress(psutil.Error):
            other.kill()
    code = None
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            code = proc.wait(PROC_WAIT_S)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
    psutil.wait_procs(left, timeout=OTHERS_WAIT_S)
    return code
