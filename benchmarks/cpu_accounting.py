"""CPU seconds per component of a running mesh, read from /proc through psutil.

Components: the producer (each child's main thread, where the workload writes), the
forwarder (the child's other threads), the host (every thread of the processes between
driver and children), the client (every thread of the driver but the benchmark's own)
and the sink (the process that reads what the client prints). Samples are taken while
everything is alive; a cost is the difference of two samples.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil

COMPONENTS = ("producer", "forwarder", "host", "client", "sink")
STACK_OWN = ("forwarder", "host", "client")
"""What the stack itself spends; the producer and the sink are the workload's and the
terminal's."""


@dataclass(frozen=True)
class Parts:
    """Whose processes are whose, found once the mesh is up."""

    hosts: tuple[int, ...]
    children: tuple[int, ...]
    sink: int
    bench_thread: int  # the driver thread that runs the benchmark, not the client

    @classmethod
    def find(cls, hosts: Iterable[int], sink: int) -> Parts:
        """The children are whatever the hosts started (forked or exec'd)."""
        hosts = tuple(hosts)
        children = tuple(c.pid for h in hosts for c in psutil.Process(h).children())
        return cls(hosts, children, sink, threading.get_native_id())


def _busy(threads: Iterable[Any]) -> float:
    """CPU seconds of psutil thread records (`Process.threads()`)."""
    return float(sum(t.user_time + t.system_time for t in threads))


def sample(parts: Parts) -> dict[str, float]:
    """Cumulative CPU seconds of each component now."""
    out = dict.fromkeys(COMPONENTS, 0.0)
    for pid in parts.children:
        threads = psutil.Process(pid).threads()
        out["producer"] += _busy(t for t in threads if t.id == pid)
        out["forwarder"] += _busy(t for t in threads if t.id != pid)
    for pid in parts.hosts:
        out["host"] += _busy(psutil.Process(pid).threads())
    me = psutil.Process()
    out["client"] = _busy(t for t in me.threads() if t.id != parts.bench_thread)
    out["sink"] = _busy(psutil.Process(parts.sink).threads())
    return out


def per_million(
    before: Mapping[str, float], after: Mapping[str, float], lines: int
) -> dict[str, float]:
    """CPU seconds per million lines of each component, and the stack's own total."""
    cost = {k: (after[k] - before[k]) * 1e6 / lines for k in COMPONENTS}
    cost["stack"] = sum(cost[k] for k in STACK_OWN)
    return cost
