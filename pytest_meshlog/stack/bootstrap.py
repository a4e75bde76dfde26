"""The bootstrap host process: BootstrapProcManager and its `python -m` entry point.

One per simulated host. It spawns that host's children with piped stdout/stderr, gives
each a private BOOTSTRAP_LOG_CHANNEL address, runs a tee + sender per child per stream,
and (when the environment allows) one FileAppender. The driver talks to it over a
socketpair passed as a file descriptor; the host's own stdout/stderr are the console tee.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .channel import LISTEN_FD_ENV, FrameConnection, listen
from .config import StackConfig
from .file_appender import FileAppender
from .forkserver import ForkedChild, StartGate, fork_module, forkable_module, warm_up
from .journal import Ev, Journal
from .mesh_key import SECRET_FD_ENV, MeshKey, hand_key
from .private_dirs import PRIVATE_DIR_LOG_ENV
from .process_groups import Frozen, Snapshot, signal_group
from .procs import (
    PipeWriter,
    cmdline,
    kill_quietly,
    pipe_inode,
    pipe_writers,
    reap_adopted,
    reaped,
    start_child_process,
    still_at,
    write_end_fd,
)
from .sender import LocalLogSender
from .tee import StreamFwder
from .waits import poll_until

STREAMS = ("stdout", "stderr")
SPAWN_CONNECT_TIMEOUT_S = 15.0
PIPE_WATCH_PERIOD_S = 0.1
HOLDER_GRACE_S = 0.5
"""How long a stream may go without EOF after its child let go of the pipe before the
watcher looks for another holder."""
"""How often the host looks for a pipe held open by someone other than its child."""
_STREAM_FD = {"stdout": 1, "stderr": 2}
_FORK_CHUNK = 32
"""Children forked back to back (see `BootstrapProcManager.spawn`)."""


@dataclass
class _Launch:
    """A child about to be started: what `spawn` prepared for it before its fork."""

    rank: int
    argv: list[str]
    env: dict[str, str]
    module: str | None  # run as `python -m module` in a fork of this host, or exec'd
    channel: str | None
    listener: socket.socket | None = None
    key: socket.socket | None = None

    def close(self) -> None:
        for sock in (self.listener, self.key):
            if sock is not None:
                sock.close()


@dataclass
class ChildState:
    rank: int
    proc: subprocess.Popen[bytes] | ForkedChild
    channel: str | None
    pipes: dict[str, int] = field(default_factory=dict)
    fwders: dict[str, StreamFwder] = field(default_factory=dict)
    senders: dict[str, LocalLogSender] = field(default_factory=dict)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    code: int | None = None
    signal: int | None = None
    killed_by_us: str | None = None
    pidfd: int | None = None
    inodes: dict[str, int] = field(default_factory=dict)
    held: list[dict[str, Any]] = field(default_factory=list)
    """Who held a stream's pipe open after the child let go of it (journal `pipe_held`)."""
    let_go: dict[str, float] = field(default_factory=dict)
    """When the child was first seen without a stream's pipe while it had no EOF yet."""
    moved: dict[str, int] = field(default_factory=dict)
    """The other descriptor a child moved a stream's pipe to (as pytest's capture does)."""


class BootstrapProcManager:
    """Spawns and stops one host's children; all methods run on the host's loop."""

    def __init__(
        self, host: int, config: StackConfig, journal: Journal, ctl: FrameConnection
    ) -> None:
        self.host = host
        self.hostname = f"host{host}"
        self.config = config
        self.journal = journal
        self.ctl = ctl
        self.children: dict[int, ChildState] = {}
        self.files: FileAppender | None = None
        self._warmed: set[str] = set()
        self.secret: bytes | None = None  # the mesh's, from the driver's spawn request
        self.stopped = asyncio.Event()
        self.ended: list[dict[str, Any]] = []
        """Descendants of children the host ended (journal `descendant_ended`)."""
        self._watcher = asyncio.create_task(self._watch_pipes())
        ctl.on_pause = lambda: self._driver_link_paused(True)  # the fallback's backpressure
        ctl.on_resume = lambda: self._driver_link_paused(False)
        gate = config.file_log_gate()
        if gate is None:
            directory, basename = config.file_log_location()
            try:
                self.files = FileAppender(directory, basename, self.hostname, journal)
            except OSError as exc:  # streaming and the console tee still work without files
                journal(Ev.FILE_APPENDER_GATED, reason=f"log dir {directory!r} unusable: {exc}")
            # faults a test asked for from the start (see docs/architecture.md)
            if self.files is not None and os.environ.get("MESHLOG_FAULT_FILE_DELAY"):
                self.slow_files(float(os.environ["MESHLOG_FAULT_FILE_DELAY"]))
            if self.files is not None and os.environ.get("MESHLOG_FAULT_FILE_ERRORS") == "1":
                self.break_files()
        else:
            journal(Ev.FILE_APPENDER_GATED, reason=gate)

    async def spawn(self, specs: list[dict[str, Any]], secret: bytes | None = None) -> None:
        """Start every child, then wire each stream's sender before its tee reads.

        The forks run back to back (a chunk at a time, which bounds the descriptors that
        wait for their fork) and the children's bookkeeping comes after the last: each fork
        makes the host's pages copy-on-write again, so Python work between two forks paid
        a page copy for every page it touched."""
        self.secret = secret
        gate = StartGate()
        launched: list[tuple[_Launch, subprocess.Popen[bytes] | ForkedChild, dict[str, int]]] = []
        try:
            for at in range(0, len(specs), _FORK_CHUNK):
                self._fork_chunk(specs[at : at + _FORK_CHUNK], gate, launched)
        finally:
            try:
                started = [self._register(*one) for one in launched]  # also when one failed
            finally:
                gate.open()
        await asyncio.gather(*(self._wire_child(child) for child in started))
        for child in started:
            self.ctl.send(("spawned", child.rank, child.proc.pid))

    def _fork_chunk(
        self,
        specs: list[dict[str, Any]],
        gate: StartGate,
        launched: list[tuple[_Launch, subprocess.Popen[bytes] | ForkedChild, dict[str, int]]],
    ) -> None:
        """Prepare `specs`, then start them back to back, adding each to `launched`; every
        listener and key is closed after (the child's copies are the ones that serve)."""
        chunk: list[_Launch] = []
        try:
            for spec in specs:
                chunk.append(self._prepare(spec))
            for launch in chunk:
                launched.append((launch, *self._launch(launch, gate)))
        finally:
            for launch in chunk:
                launch.close()

    def _prepare(self, spec: dict[str, Any]) -> _Launch:
        """Everything a child needs before its fork: its argv and environment, the
        listener it will serve, the descriptor with the mesh key."""
        argv, env = list(spec["argv"]), dict(spec["env"])
        launch = _Launch(
            spec["rank"], argv, env, forkable_module(argv), env.get("BOOTSTRAP_LOG_CHANNEL")
        )
        if launch.module is not None and launch.module not in self._warmed:
            warm_up(launch.module)  # before the first fork of that module
            self._warmed.add(launch.module)
        if launch.channel:
            launch.listener = listen(launch.channel)  # served by the child, once it runs
            env[LISTEN_FD_ENV] = str(launch.listener.fileno())
            if self.secret is not None:  # the mesh secret, on a descriptor only this child inherits
                launch.key = hand_key(MeshKey(self.secret, self.config.read_log_buffer))
                env[SECRET_FD_ENV] = str(launch.key.fileno())
        return launch

    def _launch(
        self, launch: _Launch, gate: StartGate
    ) -> tuple[subprocess.Popen[bytes] | ForkedChild, dict[str, int]]:
        keep = tuple(s.fileno() for s in (launch.listener, launch.key) if s is not None)
        if launch.module is not None:  # a Python child: fork it from this warmed-up host
            proc, out_r, err_r = fork_module(launch.module, launch.argv[3:], launch.env, keep, gate)
            return proc, {"stdout": out_r, "stderr": err_r}
        return _exec_child(launch.argv, launch.env, keep)

    def _register(
        self, launch: _Launch, proc: subprocess.Popen[bytes] | ForkedChild, pipes: dict[str, int]
    ) -> ChildState:
        child = ChildState(
            rank=launch.rank,
            proc=proc,
            channel=launch.channel,
            pipes=pipes,
            inodes={s: pipe_inode(fd) for s, fd in pipes.items()},
        )
        self.children[child.rank] = child
        forked = isinstance(proc, ForkedChild)
        self.journal(Ev.CHILD_SPAWNED, rank=child.rank, pid=proc.pid, forked=forked)
        _record_process_group(proc.pid, child.rank, self.host)
        child.pidfd = os.pidfd_open(proc.pid)
        asyncio.get_running_loop().add_reader(child.pidfd, self._reap, child)
        return child

    async def _wire_child(self, child: ChildState) -> None:
        deadline = time.monotonic() + SPAWN_CONNECT_TIMEOUT_S
        prefix = f"[{child.rank}] ".encode() if self.config.prefix_with_rank else b""
        for stream in STREAMS:
            sender = None
            if child.channel is not None:
                sender = LocalLogSender(
                    rank=child.rank,
                    stream=stream,
                    hostname=self.hostname,
                    proc_id=f"proc[{child.rank}]",
                    journal=self.journal,
                    secret=self.secret,
                )
                sender.fallback = self.ctl.send  # the driver link: for a dead forwarder's lines
                child.senders[stream] = sender
        if child.channel is not None:
            await asyncio.gather(
                *(s.connect(child.channel, deadline) for s in child.senders.values())
            )
        for stream in STREAMS:
            fwder = StreamFwder(
                rank=child.rank,
                stream=stream,
                fd=child.pipes[stream],
                console_fd=1 if stream == "stdout" else 2,
                sender=child.senders.get(stream),
                files=self.files,
                prefix=prefix,
                batch_lines=self.config.read_log_buffer,
                journal=self.journal,
            )
            child.fwders[stream] = fwder
            fwder.start()

    def _driver_link_paused(self, paused: bool) -> None:
        """The control connection to the driver is backed up: the tees whose lines go that
        way (their forwarder is gone) stop reading, so their children's pipes fill."""
        for child in self.children.values():
            for stream, fwder in child.fwders.items():
                sender = child.senders.get(stream)
                if sender is not None and (sender.in_fallback or not paused):
                    (fwder._hold if paused else fwder._release)("driver")

    def _reap(self, child: ChildState) -> None:
        if child.proc.poll() is None:
            return
        loop = asyncio.get_running_loop()
        assert child.pidfd is not None
        loop.remove_reader(child.pidfd)
        os.close(child.pidfd)
        rc = child.proc.returncode
        assert rc is not None
        child.code, child.signal = (None, -rc) if rc < 0 else (rc, None)
        self.journal(Ev.CHILD_EXITED, rank=child.rank, code=child.code, signal=child.signal)
        child.exited.set()
        self.ctl.send(("exited", child.rank, child.code, child.signal, child.killed_by_us))

    def kill(self, rank: int, sig: int, reason: str) -> bool:
        """Signal one child; a lethal signal marks it as killed by the stack (or the test)."""
        child = self.children[rank]
        if child.exited.is_set():
            return False
        if sig not in (signal.SIGSTOP, signal.SIGCONT, signal.SIGTSTP):
            child.killed_by_us = reason
        self.journal(Ev.CHILD_KILLED, rank=rank, signal=sig, reason=reason)
        child.proc.send_signal(sig)
        return True

    async def wait_stopped(self, rank: int, deadline: float) -> bool:
        """SIGSTOP stops a threaded process only once one of its threads runs to take it:
        wait until every thread is stopped, so "stopped" means stopped (bounded)."""
        tasks = f"/proc/{self.children[rank].proc.pid}/task"
        gone = False

        def stopped() -> bool:
            nonlocal gone
            try:
                states = [_thread_state(f"{tasks}/{t}/stat") for t in os.listdir(tasks)]
            except OSError:
                gone = True
                return True
            return all(s in ("T", "t") for s in states)

        if await poll_until(stopped, deadline, most=0.01):
            return not gone
        self.journal(Ev.STOP_SIGNAL_SLOW, rank=rank)
        return False

    def close_channel(self, rank: int) -> None:
        """Fault injection: the child's channel goes away under the senders."""
        self.journal(Ev.CHANNEL_CLOSED, rank=rank, reason="fault")
        for sender in self.children[rank].senders.values():
            if sender.conn is not None:
                sender.conn.close()

    def break_files(self) -> None:
        """Fault injection: from now on every file write fails as on a full disk."""
        self.redirect_files("/dev/full")

    def redirect_files(self, path: str) -> None:
        """Fault injection: from now on both files write to `path` (a FIFO nobody reads
        makes a write block in the kernel, as on a disk that stalls)."""
        if self.files is not None:
            self.files.redirect(path)

    def slow_files(self, delay: float) -> None:
        """Fault injection: every file batch takes `delay` seconds more (a slow disk)."""
        if self.files is not None:
            self.files.write_delay = delay
            self.journal(Ev.FILE_APPENDER_SLOWED, delay=delay)

    async def stop(self, timeout: float) -> dict[str, Any]:
        """Quiesce every child, wait for EOF and exit, abort the tees, close the files."""
        deadline = time.monotonic() + timeout
        self.journal(Ev.HOST_STOPPING, timeout_s=timeout, deadline=deadline)
        for child in self.children.values():
            if not child.exited.is_set():
                sender = child.senders.get("stdout") or child.senders.get("stderr")
                if sender is None or not sender.stop_child():  # no forwarder to ask
                    self.kill(child.rank, signal.SIGTERM, "stopped with SIGTERM")
        await self._wait_children(deadline - 0.25 * timeout, "did not exit after STOP")
        await self._wait_children(deadline, "did not exit after SIGKILL")
        self._check_pipes()  # name whoever still holds a pipe, before ending them all
        await self._end_descendants("the mesh stopped", deadline)
        pending = [f.done.wait() for c in self.children.values() for f in c.fwders.values()]
        with contextlib.suppress(TimeoutError):  # one deadline for all, not a floor each
            await asyncio.wait_for(asyncio.gather(*pending), max(0.0, deadline - time.monotonic()))
        tails: dict[int, dict[str, list[str]]] = {}
        for child in self.children.values():
            for stream, fwder in child.fwders.items():
                lines, _ = await fwder.abort()
                tails.setdefault(child.rank, {})[stream] = [
                    ln.decode("utf-8", "replace") for ln in lines[-20:]
                ]
            for sender in child.senders.values():
                await sender.close(deadline)
        if self.files is not None:
            await self.files.close(deadline)
        self.stopped.set()
        return {
            "exits": {c.rank: [c.code, c.signal, c.killed_by_us] for c in self.children.values()},
            "tails": tails,
            "files": sorted(self.files.paths.values()) if self.files else [],
            "held": [h for c in self.children.values() for h in c.held],
            "ended": list(self.ended),
        }

    async def _wait_children(self, deadline: float, why: str) -> None:
        waiting = [c for c in self.children.values() if not c.exited.is_set()]
        if not waiting:
            return
        try:
            await asyncio.wait_for(
                asyncio.gather(*(c.exited.wait() for c in waiting)),
                max(0.01, deadline - time.monotonic()),
            )
        except TimeoutError:
            for child in waiting:
                if not child.exited.is_set():
                    self.kill(child.rank, signal.SIGKILL, why)

    def hard_kill(self) -> None:
        self._watcher.cancel()
        for child in self.children.values():
            if child.proc.poll() is None:
                child.proc.kill()
        self._end_below("the host shut down")  # grandchildren do not die with the host

    # -- descendants of the children (SPEC 3.6) -----------------------------------------------

    async def _watch_pipes(self) -> None:
        while True:
            await asyncio.sleep(PIPE_WATCH_PERIOD_S)
            try:
                self._check_pipes(grace=HOLDER_GRACE_S)
                reap_adopted(os.getpid(), (c.proc.pid for c in self.children.values()))
            except OSError as exc:  # /proc unreadable: journaled, never fatal
                self.journal(Ev.PIPE_WATCH_FAILED, error=str(exc))

    def _check_pipes(self, grace: float = 0.0) -> None:
        """A stream with no EOF although its child let go of the pipe (quiesced, closed it,
        or exited) `grace` seconds ago: whoever else holds the write end is a descendant
        keeping it open. Name it (`pipe_held`) and end it, so the tee sees EOF while the
        child's forwarder can still relay the tail.

        The EOF of a pipe the child let go of is usually read within milliseconds, so the
        watcher waits `grace` before it looks further: first in the child itself (a child
        that moved the pipe to another fd, as pytest's capture does, is looked at there
        from then on), then in one pass over the host's descendants for every suspect. (Scanning once per stream, at once,
        stalled a host of 256 quiescing children for 20 s, past their quiesce deadline.)"""
        now = time.monotonic()
        suspects: list[tuple[ChildState, str]] = []
        for child in self.children.values():
            for stream, fwder in child.fwders.items():
                if fwder.done.is_set():
                    continue
                pid, inode = child.proc.pid, child.inodes[stream]
                fd = child.moved.get(stream, _STREAM_FD[stream])
                if not child.exited.is_set() and still_at(pid, fd, inode):
                    child.let_go.pop(stream, None)
                    continue  # the usual case, one readlink: the child writes to it
                if now - child.let_go.setdefault(stream, now) < grace:
                    continue
                moved = None if child.exited.is_set() else write_end_fd(pid, inode)
                if moved is not None:  # the child moved it to another fd: look there next
                    child.moved[stream] = moved
                    continue
                suspects.append((child, stream))
        if not suspects:
            return
        host, leads = os.getpid(), {c.proc.pid for c in self.children.values()}
        inodes = {c.inodes[s] for c, s in suspects}
        before = Snapshot()  # every group of the mesh, the children's too (a holder may
        frozen = Frozen(before, before.mesh_groups(host))  # have joined a sibling's): paused
        try:  # for one look, none of them forks until thawed: what is found stays put
            snap = Snapshot()
            below = [p for p in snap.below(host) if snap.procs[p].live]
            writers = pipe_writers(inodes, below)
            unfound = {i for i in inodes if not writers[i]}
            outside = pipe_writers(unfound, _others(snap, below)) if unfound else {}
            for child, stream in suspects:
                found = writers[child.inodes[stream]]
                if any(w.pid == child.proc.pid for w in found):
                    continue  # the child took it back since: still the child's
                reason = f"held rank {child.rank}'s {stream} pipe"
                for w in found:
                    self._held(child, stream, w, outside=False)
                    self._end(w.pid, w.cmdline, child.rank, reason)
                    if w.pgid in frozen.before and w.pgid not in leads:  # its own group:
                        self._end_group(snap, w.pgid, child.rank, reason)  # all of it at once
                for w in outside.get(child.inodes[stream], ()):  # named, never signalled
                    self._held(child, stream, w, outside=True)
        finally:
            frozen.thaw()

    def _held(self, child: ChildState, stream: str, w: PipeWriter, outside: bool) -> None:
        held = {"rank": child.rank, "stream": stream, "pid": w.pid, "cmdline": w.cmdline,
                "ppid": w.ppid, "pgid": w.pgid, "outside": outside}  # fmt: skip
        if held not in child.held:
            self.journal(Ev.PIPE_HELD, **held)
            child.held.append(held)

    def _end(self, pid: int, cmd: str, rank: int | None, reason: str) -> None:
        if kill_quietly(pid):
            ended = {"rank": rank, "pid": pid, "cmdline": cmd, "reason": reason}
            self.journal(Ev.DESCENDANT_ENDED, **ended)
            self.ended.append(ended)

    def _end_group(self, now: Snapshot, pgid: int, rank: int | None, reason: str) -> None:
        """End a (frozen) group of the mesh that no child leads: each member named."""
        for pid in now.members(pgid):
            self._end(pid, cmdline(pid), rank, reason)
        signal_group(pgid, signal.SIGKILL)

    def _end_below(self, reason: str) -> list[int]:
        """End every process below this host that is not one of its children (a child's
        descendants belong to the mesh), its groups frozen first, so that none forks a
        next generation between being found and being killed; returns the pids ended."""
        host = os.getpid()
        rank_of = {c.proc.pid: c.rank for c in self.children.values()}
        before = Snapshot()
        frozen = Frozen(before, before.mesh_groups(host))
        try:
            now = Snapshot()
            others = [p for p in now.below(host) if now.procs[p].live and p not in rank_of]
            for pid in others:
                self._end(pid, cmdline(pid), rank_of.get(now.procs[pid].pgid), reason)
            for pgid in frozen.before:
                if pgid not in rank_of:  # a group of a descendant's own: all of it
                    signal_group(pgid, signal.SIGKILL)
        finally:
            frozen.thaw()  # a child still alive in its own group runs on
        return others

    async def _end_descendants(self, reason: str, deadline: float) -> None:
        """End every process below this host that is not one of its children, and reap
        the ones it adopted (bounded)."""
        others = self._end_below(reason)
        pending = set(others)

        def all_reaped() -> bool:
            pending.difference_update([p for p in pending if reaped(p)])
            return not pending

        await poll_until(all_reaped, min(deadline, time.monotonic() + 2.0))


def _others(now: Snapshot, below: Iterable[int]) -> list[int]:
    """The live processes of this user outside the host's tree: one of them may hold a
    child's pipe (handed over SCM_RIGHTS), and can be named, never signalled."""
    mine, uid = {os.getpid(), *below}, os.getuid()
    out = []
    for pid, p in now.procs.items():
        if pid not in mine and p.live:
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    out.append(pid)
    return out


def _exec_child(
    argv: list[str], env: dict[str, str], keep: tuple[int, ...]
) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    """Start a child that cannot be forked from the host; returns it and its pipe fds."""
    popen = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        close_fds=True,
        pass_fds=keep,
        preexec_fn=start_child_process,
    )
    pipes = {}
    for stream in STREAMS:  # the tee owns the raw fds; Popen's files must not close them
        pipe = getattr(popen, stream)
        pipes[stream] = os.dup(pipe.fileno())
        pipe.close()
        setattr(popen, stream, None)
    return popen, pipes


def _record_process_group(pgid: int, rank: int, host: int) -> None:
    """Tell a running leak check (`pytest_meshlog.leaks`) about the child's process group,
    so a descendant that outlives the mesh is found even once re-parented to PID 1."""
    log = os.environ.get(PRIVATE_DIR_LOG_ENV)
    if not log:
        return
    line = json.dumps({"pgid": pgid, "rank": rank, "host": host, "by": os.getpid()})
    with contextlib.suppress(OSError):
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def _thread_state(stat_path: str) -> str:
    with open(stat_path) as f:
        return f.read().rsplit(")", 1)[1].split()[0]  # the field after "(comm)"
