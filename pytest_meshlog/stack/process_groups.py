"""Process groups below a host: freeze them, thaw them, end them.

A descendant that forks its next generation and exits, back to back, has a new pid
before any pid read from /proc can be signalled, and a pass that kills the pids it found
always misses the newest. Its process group stays the same (a fork inherits it), and a
signal sent to a group reaches every member, including one being forked as it is sent.
So the host stops whole groups first: a stopped process cannot fork, and what a scan
finds next stays put until it is named and ended.

Every decision is taken on one `Snapshot` of /proc (each process's parent, group and
state, from one read of its stat), so a process that has a new parent or is gone a
moment later cannot turn the mesh's group into a stranger's, nor a stranger's into the
mesh's. A group is the mesh's only if every member of it in the snapshot is below the
host. A process outside the mesh (one handed a pipe over SCM_RIGHTS; a job of the
driver's session whose group a descendant joined) is never stopped nor ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Proc:
    ppid: int
    pgid: int
    state: str

    @property
    def live(self) -> bool:
        return self.state not in ("Z", "X")


class Snapshot:
    """Every process of the machine that /proc lets this one read, in one pass."""

    def __init__(self) -> None:
        self.procs: dict[int, Proc] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            self.procs[int(name)] = Proc(int(fields[1]), int(fields[2]), fields[0].decode())

    def below(self, root: int) -> set[int]:
        """`root`'s descendants, dead ones not yet reaped included."""
        children: dict[int, list[int]] = {}
        for pid, p in self.procs.items():
            children.setdefault(p.ppid, []).append(pid)
        out: set[int] = set()
        todo = list(children.get(root, ()))
        while todo:
            pid = todo.pop()
            out.add(pid)
            todo.extend(children.get(pid, ()))
        return out

    def members(self, pgid: int) -> list[int]:
        """The live processes of group `pgid` (a group outlives its leader)."""
        return [pid for pid, p in self.procs.items() if p.pgid == pgid and p.live]

    def mesh_groups(self, root: int) -> set[int]:
        """The groups every member of which is below `root`, none of them protected."""
        below = self.below(root)
        outside = {p.pgid for pid, p in self.procs.items() if pid not in below}
        return {self.procs[pid].pgid for pid in below} - outside - protected()


def protected() -> set[int]:
    """Never stopped nor ended, whatever a snapshot says: this host's group and its
    parent's (the driver's)."""
    return {os.getpgid(0), os.getpgid(os.getppid())}


def signal_group(pgid: int, sig: int) -> bool:
    """Signal every process of the group; False if none was (gone, or not ours to signal:
    EPERM means no member could be)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class Frozen:
    """Groups stopped with SIGSTOP, and the members that were stopped before (a test's
    own SIGSTOP of a child): `thaw` resumes only the others."""

    def __init__(self, snapshot: Snapshot, groups: Iterable[int]) -> None:
        self.before: dict[int, set[int]] = {}
        for pgid in set(groups) - protected():
            stopped = {p for p in snapshot.members(pgid) if snapshot.procs[p].state == "T"}
            if signal_group(pgid, signal.SIGSTOP):
                self.before[pgid] = stopped

    def thaw(self) -> None:
        now = Snapshot()
        for pgid, stopped in self.before.items():
            for pid in now.members(pgid):
                if pid not in stopped:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGCONT)
