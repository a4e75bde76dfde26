"""Leak checks: what a test left behind that it did not have before it started.

`LeakChecker.start()` takes a snapshot, `finish()` compares against it and names each
leak and the component that made it:

* descendant processes of this (driver) process: a bootstrap host, a child of a given
  rank (read from the host's journal), or a process the test started itself; and any
  process in the process group of a mesh child (hosts record each child's group in the
  file named by `MESHLOG_PRIVATE_DIR_LOG`), so a grandchild that outlived its host,
  re-parented to PID 1, is found too;
* file descriptors of this process (`/proc/self/fd`): socket (with its Unix path when it
  has one), pipe, event-loop or other anonymous inode, or file with its target;
* private directories the stack made (`stack.channel.private_dir`: the socket
  directories `/tmp/ml-*`, a mesh's own work directory when it was given none, a
  forwarder's ephemeral one). The driver records them in `PRIVATE_DIRS`; hosts and
  children, which inherit the environment, append them to the file named by
  `MESHLOG_PRIVATE_DIR_LOG`, which the checker sets while it runs.

Only what appeared between the two snapshots counts, so descriptors and processes of
pytest, xdist or fixtures set up before the check (and torn down after it) never do;
nor does the spare bootstrap host a mesh leaves warming for the next (`stack.spare`).
Every xdist worker checks its own process tree. Processes get a grace period to finish
exiting, and a leaked descriptor is looked at again after a garbage collection.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .stack import spare
from .stack.channel import PRIVATE_DIR_LOG_ENV, PRIVATE_DIRS, PrivateDir
from .stack.procs import OWNER_FILE

HOST_MODULE = "pytest_meshlog.stack.host"


@dataclass(frozen=True)
class Leak:
    kind: str  # "process" | "fd" | "socket dir" | "temp dir"
    what: str
    component: str

    def __str__(self) -> str:
        return f"{self.kind} {self.what}: {self.component}"


@dataclass
class _Snapshot:
    procs: set[tuple[int, float]] = field(default_factory=set)
    fds: dict[int, str] = field(default_factory=dict)
    dir_seq: int = 0
    dir_log_offset: int = 0


def open_fds() -> dict[int, str]:
    """fd -> what it points at (readlink of /proc/self/fd/N); {} where there is no /proc."""
    out: dict[int, str] = {}
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return out
    for name in names:
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except (OSError, ValueError):
            continue  # the directory listing's own fd, closed by now
    return out


def _descendants() -> set[tuple[int, float]]:
    out: set[tuple[int, float]] = set()
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            out.add((proc.pid, proc.create_time()))
    return out


def _group_members(groups: Mapping[int, object]) -> set[tuple[int, float]]:
    """Live processes in any of the process groups `groups` (wherever they were re-parented)."""
    out: set[tuple[int, float]] = set()
    if not groups:
        return out
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) in groups:
                out.add((proc.pid, proc.create_time()))
    return out


def _group_component(proc: psutil.Process, groups: Mapping[int, Mapping[str, int]]) -> str:
    """A descendant of a mesh child that is no longer below its host: says whose it was."""
    try:
        pgid = os.getpgid(proc.pid)
        parent = proc.ppid()
    except (psutil.Error, OSError):
        return _process_component(proc)
    rec = groups.get(pgid)
    if rec is None or pgid == proc.pid:
        return _process_component(proc)
    via = _process_component(proc)
    if "bootstrap host" in via or "child process" in via:
        return via
    return (
        f"descendant of the child of rank {rec['rank']} on host {rec['host']} (its process "
        f"group {pgid}), now a child of pid {parent}: it outlived its mesh"
    )


def _alive(key: tuple[int, float]) -> psutil.Process | None:
    try:
        proc = psutil.Process(key[0])
        if proc.create_time() != key[1] or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.Error:
        return None


def _unix_paths() -> dict[str, str]:
    """socket inode -> bound path, from /proc/net/unix."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 8:
                out[parts[6]] = parts[7]
    return out


class LeakChecker:
    """One test's before/after comparison. `dir_log` is where stack processes record the
    private directories they make (it should live in pytest's own temp directory)."""

    def __init__(self, dir_log: str | os.PathLike[str] | None = None, grace_s: float = 3.0) -> None:
        self.dir_log = str(dir_log) if dir_log is not None else None
        self.grace_s = grace_s
        self._before = _Snapshot()
        self._saved_env: str | None = None
        self._env_set = False

    def start(self) -> None:
        if self.dir_log is not None and os.environ.get(PRIVATE_DIR_LOG_ENV) is None:
            Path(self.dir_log).touch()
            self._saved_env = os.environ.get(PRIVATE_DIR_LOG_ENV)
            os.environ[PRIVATE_DIR_LOG_ENV] = self.dir_log
            self._env_set = True
        log = os.environ.get(PRIVATE_DIR_LOG_ENV)
        self._before = _Snapshot(
            procs=_descendants(),
            fds=open_fds(),
            dir_seq=PRIVATE_DIRS[-1].seq if PRIVATE_DIRS else 0,
            dir_log_offset=_size(log),
        )

    def finish(self, mesh_labels: Mapping[str, str] | None = None) -> list[Leak]:
        """Everything that appeared since `start()` and is still there."""
        try:
            labels = dict(mesh_labels or {})
            dirs = self._new_dirs()
            leaks = self._processes()
            leaks += self._fds(dirs, labels)
            leaks += self._dirs(dirs, labels)
            return leaks
        finally:
            if self._env_set:
                os.environ.pop(PRIVATE_DIR_LOG_ENV, None)
                self._env_set = False

    # -- processes ------------------------------------------------------------------------

    def _processes(self) -> list[Leak]:
        spare_pids = spare.reserved()[0]  # the warm host waiting for the next mesh
        groups = self._mesh_groups()
        found = _descendants() | _group_members(groups)
        new = {k for k in found - self._before.procs if k[0] not in spare_pids}
        deadline = time.monotonic() + self.grace_s
        while True:
            alive = {k: p for k in new if (p := _alive(k)) is not None}
            if not alive or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        return [
            Leak("process", f"{p.pid} `{_cmdline(p)}`", _group_component(p, groups))
            for _, p in sorted(alive.items())
        ]

    def _mesh_groups(self) -> dict[int, dict[str, int]]:
        """pgid -> {rank, host} of every mesh child started since `start()`."""
        out: dict[int, dict[str, int]] = {}
        log = os.environ.get(PRIVATE_DIR_LOG_ENV)
        if not log:
            return out
        with contextlib.suppress(OSError), open(log, "rb") as f:
            f.seek(self._before.dir_log_offset)
            for raw in f.read().splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    rec = json.loads(raw)
                    if "pgid" in rec:
                        out[int(rec["pgid"])] = {"rank": int(rec["rank"]), "host": int(rec["host"])}
        return out

    # -- descriptors ----------------------------------------------------------------------

    def _fds(self, dirs: list[PrivateDir], labels: Mapping[str, str]) -> list[Leak]:
        new = self._new_fds()
        if new:
            gc.collect()  # a forgotten object whose finaliser closes its descriptor
            new = self._new_fds()
        if not new:
            return []
        unix = _unix_paths() if any(t.startswith("socket:") for t in new.values()) else {}
        leaks = []
        for fd, target in sorted(new.items()):
            if target.startswith("socket:["):
                path = unix.get(target[len("socket:[") : -1])
                what = f"{fd} (socket {target}{f' bound to {path}' if path else ''})"
                owner = _dir_owner(path, dirs, labels) if path else None
            elif target.startswith("pipe:["):
                what, owner = f"{fd} (pipe {target})", None
            elif target.startswith("anon_inode:"):
                kind = target.removeprefix("anon_inode:").strip("[]")
                hint = " (an event loop that was never closed?)" if kind == "eventpoll" else ""
                what, owner = f"{fd} ({kind}{hint})", None
            else:
                what = f"{fd} (file {target})"
                owner = _dir_owner(target, dirs, labels)
            leaks.append(Leak("driver fd", what, owner or "opened in the driver (pytest) process"))
        return leaks

    def _new_fds(self) -> dict[int, str]:
        before = self._before.fds
        spare_fds = spare.reserved()[1]
        return {
            fd: t for fd, t in open_fds().items() if before.get(fd) != t and fd not in spare_fds
        }

    # -- private directories --------------------------------------------------------------

    def _new_dirs(self) -> list[PrivateDir]:
        seen: dict[str, PrivateDir] = {}
        for d in PRIVATE_DIRS:
            if d.seq > self._before.dir_seq:
                seen[d.path] = d
        log = os.environ.get(PRIVATE_DIR_LOG_ENV)
        if log:
            with contextlib.suppress(OSError), open(log, "rb") as f:
                f.seek(self._before.dir_log_offset)
                for raw in f.read().splitlines():
                    try:
                        rec = json.loads(raw)
                        seen.setdefault(
                            rec["path"], PrivateDir(rec["path"], rec["pid"], rec["creator"], 0)
                        )
                    except (ValueError, KeyError, TypeError):
                        continue
        return list(seen.values())

    def _dirs(self, dirs: list[PrivateDir], labels: Mapping[str, str]) -> list[Leak]:
        leaks = []
        for d in dirs:
            if not os.path.lexists(d.path):
                continue
            try:  # the owner claim (stack.procs.claim) is the stack's bookkeeping, not content
                names = sorted(n for n in os.listdir(d.path) if n != OWNER_FILE)
            except OSError:
                names = []
            sockets = [n for n in names if n.endswith(".sock")]
            kind = "temp dir" if os.path.basename(d.path).startswith("ml-work-") else "socket dir"
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            what = f"{d.path} ({shown or 'empty'})"
            if sockets and kind == "temp dir":
                kind = "socket dir"
            leaks.append(Leak(kind, what, _describe_dir(d, labels)))
        return leaks


def _size(path: str | None) -> int:
    if not path:
        return 0
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _who(pid: int) -> str:
    return "the driver (pytest) process" if pid == os.getpid() else f"process {pid}"


def _describe_dir(d: PrivateDir, labels: Mapping[str, str]) -> str:
    label = labels.get(d.path)
    made = f"made by {d.creator} in {_who(d.pid)}"
    return f"{label}, {made}" if label else made


def _dir_owner(path: str, dirs: list[PrivateDir], labels: Mapping[str, str]) -> str | None:
    for d in dirs:
        if path == d.path or path.startswith(d.path + os.sep):
            return f"in the stack's directory {d.path} ({_describe_dir(d, labels)})"
    for directory, label in labels.items():
        if path.startswith(directory + os.sep):
            return f"in the directory of {label}"
    return None


def _cmdline(proc: psutil.Process) -> str:
    try:
        text = " ".join(proc.cmdline()) or proc.name()
    except psutil.Error:
        return "?"
    return text if len(text) <= 120 else text[:117] + "..."


def _host_index(cmd: list[str]) -> str | None:
    if HOST_MODULE not in cmd:
        return None
    with contextlib.suppress(ValueError, IndexError):
        return cmd[cmd.index("--host") + 1]
    return "?"


def _process_component(proc: psutil.Process) -> str:
    try:
        cmd = proc.cmdline()
        parent = proc.parent()
        parent_cmd = parent.cmdline() if parent is not None else []
    except psutil.Error:
        return "unknown (it went away while being looked at)"
    parent_host = _host_index(parent_cmd)
    if parent_host is not None:  # a child of a bootstrap host (forked or exec'd)
        rank = _rank_of(proc, parent_cmd)
        where = f"rank {rank}" if rank is not None else "unknown rank"
        return f"child process {where} of host process {parent_host} (pid {parent.pid if parent else '?'})"
    host = _host_index(cmd)
    if host is not None:
        return f"bootstrap host process {host} of a mesh that was not stopped"
    ppid = parent.pid if parent is not None else "?"
    by = "the test (driver process)" if ppid == os.getpid() else f"process {ppid}"
    return f"started by {by}"


def _rank_of(proc: psutil.Process, host_cmd: list[str]) -> int | None:
    with contextlib.suppress(psutil.Error, ValueError):
        rank = proc.environ().get("MESHLOG_RANK")
        if rank is not None:
            return int(rank)
    # a child forked from the host shares its environment: ask the host's journal
    with contextlib.suppress(ValueError, IndexError, OSError):
        journal = Path(host_cmd[host_cmd.index("--journal-dir") + 1])
        for path in journal.glob("host*.jsonl"):
            for raw in path.read_bytes().splitlines():
                with contextlib.suppress(ValueError):
                    ev = json.loads(raw)
                    if ev.get("ev") == "child_spawned" and ev.get("pid") == proc.pid:
                        return int(ev["rank"])
    return None


def format_leaks(nodeid: str, leaks: list[Leak]) -> str:
    lines = [f"meshlog leak check: {nodeid} left {len(leaks)} thing(s) behind:"]
    lines += [f"  - {leak}" for leak in leaks]
    lines.append(
        "(turn the check off with --meshlog-no-leak-check or the ini key meshlog_leak_check = false)"
    )
    return "\n".join(lines)
