"""Process helpers shared by the driver and the bootstrap.

Also what the bootstrap needs to keep a child's descendants in its mesh (SPEC 3.6): the
host is a child subreaper (an orphaned grandchild is re-parented to it, not to PID 1),
each child leads its own process group, and `pipe_writers` finds who still holds the
write end of a child's pipe, from /proc.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_O_ACCMODE = 0o3


def _prctl(option: int, arg: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}, {arg}): {os.strerror(err)}")


def set_parent_death_signal() -> None:
    """preexec_fn: die with SIGKILL if the spawning thread goes away, so nothing is orphaned."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def start_child_process() -> None:
    """preexec_fn of a mesh child: dies with its host, and leads its own process group (its
    descendants stay in it unless they leave on purpose)."""
    set_parent_death_signal()
    os.setpgid(0, 0)


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux >= 3.4); False where
    that is not possible."""
    try:
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    except (OSError, AttributeError):
        return False
    return True


_STATES = {"R": "runnable", "S": "sleeping", "D": "in uninterruptible wait (disk?)",
           "T": "stopped", "t": "stopped by a tracer", "Z": "a zombie"}  # fmt: skip


def time_spent(pid: int) -> str:
    """How a process that missed a deadline spent it, from /proc: its state, the CPU it has
    used and its age, with the machine's load. Runnable with little CPU means the machine
    did not run it (overloaded, or stalled itself), not that it hung. "" if unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except OSError:
        return ""
    fields = stat[stat.rindex(")") + 2 :].split()  # from field 3 (state) on
    tick = os.sysconf("SC_CLK_TCK")
    cpu_ms = (int(fields[11]) + int(fields[12])) * 1000 // tick  # utime + stime
    age = uptime - int(fields[19]) / tick  # starttime
    load = os.getloadavg()[0]
    state = _STATES.get(fields[0], fields[0])
    return f"pid {pid} {state}, {cpu_ms} ms of CPU in its {age:.1f} s; load average {load:.1f}"


@dataclass(frozen=True)
class PipeWriter:
    """A process holding the write end of a pipe: who held a child's stream open."""

    pid: int
    cmdline: str
    ppid: int | None
    pgid: int | None


def cmdline(pid: int) -> str:
    """The process's command line (its name in brackets if it has none); "?" if gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
        if raw:
            return " ".join(a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0"))
        with open(f"/proc/{pid}/comm") as f:
            return f"[{f.read().strip()}]"
    except OSError:
        return "?"


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, pgid) of a live, non-zombie process; None if gone or a zombie."""
    st = _stat_any(pid)
    return None if st is None or st[2] else (st[0], st[1])


def _stat_any(pid: int) -> tuple[int, int, bool] | None:
    """(ppid, pgid, is a zombie) of a process; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[2]), fields[0] in (b"Z", b"X")


def descendants(root: int) -> list[int]:
    """Live descendants of `root` (not itself), parents before children, from /proc.

    The walk goes through zombies, which are not returned: a process whose main thread has
    exited shows as a zombie while its other threads still run, and its children keep it
    as their parent until the last thread is gone. A killed mesh child is such a process
    for a moment, and a walk that stopped at it lost its grandchildren (they then outlived
    the mesh)."""
    parent_of: dict[int, int] = {}
    zombies: set[int] = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat_any(int(name))
            if st is not None:
                parent_of[int(name)] = st[0]
                if st[2]:
                    zombies.add(int(name))
    children: dict[int, list[int]] = {}
    for pid, ppid in parent_of.items():
        children.setdefault(ppid, []).append(pid)
    out: list[int] = []
    todo = list(children.get(root, ()))
    while todo:
        pid = todo.pop(0)
        if pid not in zombies:
            out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def reap_adopted(root: int, keep: Iterable[int]) -> int:
    """Reap the dead orphans a subreaper `root` adopted (not its own children of `keep`,
    whose exits it waits for elsewhere); returns how many. A descendant that re-forks back
    to back leaves one per generation, and unreaped they would fill the process table."""
    kept, n = set(keep), 0
    for pid in _children(root):
        if pid not in kept:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    n += 1
            except ChildProcessError:
                continue
    return n


def _children(pid: int) -> list[int]:
    """`pid`'s children, from each of its threads' /proc children list (a few reads, not
    a pass over /proc: the watcher asks every tick); without that list, from a pass."""
    if not os.path.exists(f"/proc/{pid}/task/{pid}/children"):  # no CONFIG_PROC_CHILDREN
        return [int(n) for n in os.listdir("/proc") if n.isdigit() and _ppid(int(n)) == pid]
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += map(int, f.read().split())
        except OSError:  # a thread that ended since the listing
            continue
    return out


def _ppid(pid: int) -> int | None:
    st = _stat_any(pid)
    return None if st is None else st[0]


def pipe_inode(fd: int) -> int:
    return os.fstat(fd).st_ino


def still_at(pid: int, fd: int, inode: int) -> bool:
    """Whether `pid` still has the pipe `inode` at `fd`: one readlink, for the watcher's
    every-tick look at each child. A child was only ever handed its pipes' write ends
    (the host keeps the read ends; an exec'd child gets them close-on-exec and a forked
    one closes them), so the link alone says it holds the write end."""
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}") == f"pipe:[{inode}]"
    except OSError:
        return False


def write_end_fd(pid: int, inode: int) -> int | None:
    """The descriptor at which `pid` holds the pipe `inode` open for writing, if it does."""
    return _write_ends(pid, {f"pipe:[{inode}]": inode}).get(inode)


def _write_ends(pid: int, wanted: dict[str, int]) -> dict[int, int]:
    """Which pipes of `wanted` (link text -> inode) `pid` holds open for writing, each
    with one descriptor it holds it at."""
    try:
        names = sorted(os.listdir(f"/proc/{pid}/fd"), key=int)  # a moved pipe is low
    except OSError:
        return {}
    found: dict[int, int] = {}
    for name in names:
        try:
            inode = wanted.get(os.readlink(f"/proc/{pid}/fd/{name}"))
            if inode is None or inode in found:
                continue
            with open(f"/proc/{pid}/fdinfo/{name}") as f:
                for line in f:
                    if line.startswith("flags:"):
                        if int(line.split()[1], 8) & _O_ACCMODE == os.O_WRONLY:
                            found[inode] = int(name)
                        break
            if len(found) == len(wanted):
                break
        except (OSError, ValueError):
            continue
    return found


def pipe_writers(inodes: Iterable[int], among: Iterable[int]) -> dict[int, list[PipeWriter]]:
    """The processes of `among` that hold the write end of each pipe of `inodes`, found in
    one pass over their descriptors however many pipes are asked about (a host with
    hundreds of children asks about hundreds at once)."""
    wanted = {f"pipe:[{inode}]": inode for inode in inodes}
    out: dict[int, list[PipeWriter]] = {inode: [] for inode in wanted.values()}
    for pid in among:
        held = _write_ends(pid, wanted)
        if held:
            st = _stat(pid)
            writer = PipeWriter(pid, cmdline(pid), st[0] if st else None, st[1] if st else None)
            for inode in held:
                out[inode].append(writer)
    return out


def kill_quietly(pid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal `pid`; False if it was already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def reaped(pid: int) -> bool:
    """Collect `pid`'s exit status if it is our child (a subreaper's adopted orphan) and
    has ended; True once it is gone (or was never ours to reap)."""
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return _stat(pid) is None  # not our child: gone once it is not a live process
    return done == pid


# -- directories that outlive their owner ------------------------------------------------------

OWNER_FILE = ".owner"
"""In a directory the driver made (`claim`): "<pid> <start time>" of the process it belongs to."""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): with
    the pid, it names one process even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def claim(directory: str | os.PathLike[str]) -> None:
    """Mark `directory` as this process's, so a later `sweep_stale` can tell when its owner
    is dead (a SIGKILLed driver never removes its own socket folder)."""
    me = os.getpid()
    path = os.path.join(directory, OWNER_FILE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"{me} {_start_time(me)}\n".encode())
    finally:
        os.close(fd)


def stale_owner(directory: str | os.PathLike[str]) -> int | None:
    """The dead owner's pid if `directory` is claimed by a process that no longer runs;
    None when its owner lives or it carries no claim (never ours to judge)."""
    try:
        with open(os.path.join(directory, OWNER_FILE)) as f:
            pid_text, started = f.read().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return None if _start_time(pid) == started else pid


def sweep_stale(base: str, prefix: str = "ml-") -> list[tuple[str, int]]:
    """Remove this user's `base/prefix*` directories whose claiming process is dead; returns
    (path, dead owner pid) for each one removed."""
    import shutil

    removed: list[tuple[str, int]] = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    uid = os.getuid()
    for name in names:
        if not name.startswith(prefix):
            continue
        path = os.path.join(base, name)
        try:
            if os.lstat(path).st_uid != uid or not os.path.isdir(path):
                continue
        except OSError:
            continue
        owner = stale_owner(path)
        if owner is not None:
            shutil.rmtree(path, ignore_errors=True)
            removed.append((path, owner))
    return removed
