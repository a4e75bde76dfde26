"""Process groups below a host: freeze them, thaw them, end them.

A descendant that forks its next generation and exits, back to back, has a new pid
before any pid read from /proc can be signalled, and a pass that kills the pids it found
always misses the newest. Its process group stays the same (a fork inherits it), and a
signal sent to a group reaches every member, including one being forked as it is sent.
So the host stops whole groups first: a stopped process cannot fork, and what a scan
finds next stays put until it is named and ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable

from .procs import descendants


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, pgid, session) of a process; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0].decode(), int(fields[2]), int(fields[3])


def group_of(pid: int) -> int | None:
    st = _stat(pid)
    return None if st is None else st[1]


def user_processes() -> list[int]:
    """Every process of this user but this one, from /proc."""
    me, uid, out = os.getpid(), os.getuid(), []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != me:
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    out.append(int(name))
            except OSError:
                continue
    return out


def members(pgid: int) -> list[int]:
    """The live processes of group `pgid` (the group outlives its leader: any member
    keeps it)."""
    out = []
    for pid in user_processes():
        st = _stat(pid)
        if st is not None and st[1] == pgid and st[0] not in ("Z", "X"):
            out.append(pid)
    return out


def protected() -> set[int]:
    """Groups never stopped nor ended: this host's own and its parent's (the driver's,
    which a descendant could join with setpgid, as it is in the same session)."""
    return {os.getpgid(0), os.getpgid(os.getppid())}


def signal_group(pgid: int, sig: int) -> bool:
    """Signal every process of the group; False if it has none left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def below(root: int) -> list[int]:
    """`root`'s descendants, the dead ones not yet reaped included: a holder that re-forks
    back to back is a new pid before a walk reaches it, but each generation it left
    behind still names its group."""
    return descendants(root, zombies=True)


def groups_of(pids: Iterable[int]) -> set[int]:
    """Their process groups, never a protected one."""
    return {g for g in map(group_of, pids) if g is not None} - protected()


class Frozen:
    """Groups stopped with SIGSTOP, and the members that were stopped before (a test's
    own SIGSTOP of a child): `thaw` resumes only the others.

    Only the mesh's groups are stopped: one led by a process seen below the host (`known`:
    a child, a descendant that made its group, a dead generation), or one in a session a
    descendant made (a setsid). A group a descendant merely joined (setpgid into another
    group of the driver's session: a user's shell job) is never stopped, nor ended."""

    def __init__(self, groups: Iterable[int], known: Iterable[int]) -> None:
        self.known = set(known)
        self.session = os.getsid(0)
        self.before: dict[int, set[int]] = {}
        self.add(groups)

    def ours(self, pgid: int) -> bool:
        if pgid in self.known:
            return True
        sessions = {st[2] for p in members(pgid) if (st := _stat(p)) is not None}
        return bool(sessions) and self.session not in sessions

    def add(self, groups: Iterable[int]) -> None:
        for pgid in set(groups) - protected() - set(self.before):
            if not self.ours(pgid):
                continue
            stopped = {p for p in members(pgid) if (_stat(p) or ("",))[0] == "T"}
            if signal_group(pgid, signal.SIGSTOP):
                self.before[pgid] = stopped

    def thaw(self) -> None:
        for pgid, stopped in self.before.items():
            for pid in members(pgid):
                if pid not in stopped:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
