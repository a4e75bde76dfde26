"""Questions a scenario asks of a running mesh, and the one bounded wait they use.

Shared by the built-in catalog (`catalog.py`) and the generated scenarios
(`strategies.py`); each reads the mesh through its public API (journal, progress
records, delivered lines, flush).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fake_procs import read_progress

from .harness import Mesh
from .report import BarrierResult
from .stack.stalls import during


def poll_until(
    done: Callable[[], bool],
    timeout: float = 20.0,
    what: str | Callable[[], str] = "a condition",
    interval: float = 0.005,
) -> None:
    """Return once `done()` holds; past `timeout` seconds raise TimeoutError saying what
    was waited for (`what`, or what it returns then: it may name who is still missing)."""
    started = time.monotonic()
    deadline = started + timeout
    while not done():
        if time.monotonic() > deadline:
            text = what if isinstance(what, str) else what()
            raise TimeoutError(
                f"timed out after {timeout:.1f}s waiting for {text}{during(started)}"
            )
        time.sleep(interval)


def journal_events(mesh: Mesh, name: str) -> list[dict[str, Any]]:
    """The mesh's journal events called `name`, so far."""
    return [e for e in mesh.journal() if e["ev"] == name]


def in_flight(mesh: Mesh, rank: int) -> int:
    """Bytes the child has written to stdout that the client has not received yet."""
    written = sum(
        w.nbytes for w in read_progress(mesh.progress(rank)).writes if w.stream == "stdout"
    )
    return written - sum(len(line) + 1 for line in mesh.delivered(rank))


def barrier_states(mesh: Mesh, procs: int) -> list[str]:
    """Per rank, where it is with its barrier step: `before`, `wait` or `passed`."""
    states = []
    for r in range(procs):
        text = mesh.progress(r)
        if b" acked " in text or b" timeout" in text:
            states.append("passed")
        elif b" wait" in text:
            states.append("wait")
        else:
            states.append("before")
    return states


def flush_until_everyone_waited(mesh: Mesh, procs: int, timeout: float = 20.0) -> BarrierResult:
    """Flush once every child waits in its barrier step (its progress record says so);
    flush again if one began waiting just too late, until every child got past it."""
    result: BarrierResult | None = None

    def everyone_passed() -> bool:
        nonlocal result
        states = barrier_states(mesh, procs)
        if result is not None and all(state == "passed" for state in states):
            return True
        if all(state in ("wait", "passed") for state in states):
            result = mesh.flush(timeout=10)
        return False

    poll_until(
        everyone_passed,
        timeout,
        what=lambda: f"every child to pass its barrier step: {barrier_states(mesh, procs)}",
        interval=0.01,
    )
    assert result is not None
    return result
