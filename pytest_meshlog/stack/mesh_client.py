"""LoggingMeshClient: the driver's handle on a mesh (spawn, set_mode, flush, stop).

The stack's asyncio loop runs in one background thread of the driver; these methods are
synchronous, and each waits with a deadline. Whatever happens, `close()` leaves no
process, socket or directory behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from . import spare
from .channel import FrameConnection, private_dir
from .client import LogClientActor, Sink
from .config import ConfigError, StackConfig
from .journal import Ev, Event, Journal, read_journal
from .outcomes import (
    BarrierOutcome,
    ExitInfo,
    NotWaited,
    PipeHolder,
    StopOutcome,
    StopProblem,
)
from .procs import claim, set_parent_death_signal, sweep_stale
from .waits import process_exit

T = TypeVar("T")


@dataclass(frozen=True)
class ChildSpec:
    """What to run as one child; its rank is its index in the spawn list."""

    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)


class MeshError(RuntimeError):
    """The mesh could not do what was asked within its deadline; says what was waited for."""


@dataclass
class _Host:
    index: int
    proc: subprocess.Popen[bytes]
    ctl: FrameConnection
    ranks: list[int]
    inbox: asyncio.Queue[list[Any] | None]
    console: tuple[str, str]


class LoggingMeshClient:
    """Spawns bootstrap hosts and children and runs the client actor in this process."""

    def __init__(
        self,
        config: StackConfig | None = None,
        *,
        workdir: str | os.PathLike[str] | None = None,
        hosts: int = 1,
        aggregate_window_sec: float | None = None,
        stream_to_client: bool = True,
        sink: Sink | None = None,
        python: str = sys.executable,
        extra_env: Mapping[str, str] | None = None,
        consume_delay: float = 0.0,
        spare_host: bool = False,
    ) -> None:
        self.config = config if config is not None else StackConfig.from_env()
        if hosts < 1:
            raise ConfigError(f"hosts={hosts!r} must be at least 1")
        if aggregate_window_sec is not None and not stream_to_client:
            raise ConfigError("aggregate_window_sec is set but stream_to_client is false")
        self.hosts = hosts
        self.python = python
        self.spare_host = spare_host  # take a warm host if one waits; leave one at close
        self._child_modules: set[str] = set()
        self.extra_env = dict(extra_env or {})
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(private_dir("ml-work-"))
        self.journal_dir = self.workdir / "journal"
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self.record_dir = self.workdir / "records"
        self.record_dir.mkdir(exist_ok=True)
        self.sockdir = private_dir()
        claim(self.sockdir)
        if self._owns_workdir:
            claim(self.workdir)
        self.journal = Journal(self.journal_dir, "driver")
        for path, owner in sweep_stale(os.path.dirname(self.sockdir)):  # of killed drivers
            self.journal(Ev.STALE_DIR_REMOVED, path=path, owner_pid=owner)
        self.client = LogClientActor(
            os.path.join(self.sockdir, "client.sock"), self.journal, sink, consume_delay,
            batch_lines=self.config.read_log_buffer,
        )  # fmt: skip
        self.stream_to_client = stream_to_client
        self.aggregate_window_sec = aggregate_window_sec
        self.exits: dict[int, ExitInfo] = {}
        self.unanswered: dict[int, str] = {}
        """rank -> why its end is unknown (its host did not answer stop by the deadline)."""
        self.host_of: dict[int, int] = {}
        self._hosts: list[_Host] = []
        self._closed = False
        self._stopped: StopOutcome | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="meshlog-stack", daemon=True
        )
        self._thread.start()
        self._call(self.client.start(), 10.0, "the log client to listen")
        self.client.set_aggregate(aggregate_window_sec)

    # -- plumbing ---------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise MeshError(f"timed out after {timeout:.1f}s waiting for {what}") from None

    @property
    def ranks(self) -> list[int]:
        return sorted(self.host_of)

    # -- spawn ------------------------------------------------------------------------------

    def spawn(self, children: Sequence[ChildSpec], timeout: float = 30.0) -> None:
        """Start the hosts and children; returns once every forwarder is connected (or its
        child already exited)."""
        if self._hosts:
            raise MeshError("this mesh client has already spawned its children")
        if not children:
            raise ConfigError("spawn needs at least one child")
        self.config.check_log_dir()
        per_host = -(-len(children) // self.hosts)
        self._call(self._spawn(list(children), per_host, timeout), timeout + 5, "spawn")

    async def _spawn(self, children: list[ChildSpec], per_host: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        forwarding = self.config.enable_log_forwarding
        base_env = {**os.environ, **self.config.to_env(), **self.extra_env}
        for h in range(self.hosts):
            ranks = list(range(h * per_host, min(len(children), (h + 1) * per_host)))
            host = await self._start_host(h, base_env)
            host.ranks = ranks
            specs = []
            for rank in ranks:
                self.host_of[rank] = h
                env = {**base_env, **children[rank].env}
                env.update(
                    MESHLOG_RANK=str(rank),
                    MESHLOG_HOSTNAME=f"host{h}",
                    MESHLOG_PROC_ID=f"proc[{rank}]",
                    MESHLOG_JOURNAL_DIR=str(self.journal_dir),
                    MESHLOG_RECORD_DIR=str(self.record_dir),
                    MESHLOG_STREAM_TO_CLIENT="1" if self.stream_to_client else "0",
                )
                if forwarding:
                    env["BOOTSTRAP_LOG_CHANNEL"] = os.path.join(self.sockdir, f"c{rank}.sock")
                    env["MESHLOG_CLIENT_ADDR"] = self.client.address
                else:
                    env.pop("BOOTSTRAP_LOG_CHANNEL", None)
                    env.pop("MESHLOG_CLIENT_ADDR", None)
                specs.append({"rank": rank, "argv": list(children[rank].argv), "env": env})
                argv = children[rank].argv
                if len(argv) > 2 and argv[1] == "-m":
                    self._child_modules.add(argv[2])
            host.ctl.send(("spawn", specs, self.client.secret))  # over the trusted socketpair
        for host in self._hosts:
            waiting = set(host.ranks)
            while waiting:
                msg = await self._next(
                    host, deadline, f"host{host.index} to spawn ranks {sorted(waiting)}"
                )
                if msg[0] == "spawned":
                    waiting.discard(msg[1])
        if forwarding:
            ok = await self.client.wait_until(self._all_forwarders_in, deadline)
            if not ok:
                missing = [
                    r for r in self.ranks if r not in self.client.forwarders and r not in self.exits
                ]
                raise MeshError(
                    f"forwarders of ranks {missing} did not connect within {timeout:.1f}s"
                )

    def _all_forwarders_in(self) -> bool:
        return all(r in self.client.forwarders or r in self.exits for r in self.ranks)

    async def _start_host(self, h: int, env: dict[str, str]) -> _Host:
        out = str(self.workdir / f"console-host{h}.stdout")
        err = str(self.workdir / f"console-host{h}.stderr")
        warm = spare.take(self.python, env) if self.spare_host else None
        with open(out, "wb") as fo, open(err, "wb") as fe:
            if warm is not None:
                setup = {"host": h, "journal_dir": str(self.journal_dir), "env": env}
                warm.hand_over(setup, (fo.fileno(), fe.fileno()))
                proc, parent = warm.proc, warm.sock
            else:
                parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                proc = subprocess.Popen(
                    [self.python, "-m", spare.HOST_MODULE, "--host", str(h),
                     "--ctl-fd", str(child.fileno()), "--journal-dir", str(self.journal_dir)],
                    stdin=subprocess.DEVNULL, stdout=fo, stderr=fe, env=env,
                    pass_fds=(child.fileno(),), preexec_fn=set_parent_death_signal,
                )  # fmt: skip
                child.close()
        parent.setblocking(False)
        inbox: asyncio.Queue[list[Any] | None] = asyncio.Queue()
        host = _Host(h, proc, FrameConnection(lambda c, m: None), [], inbox, (out, err))
        host.ctl = FrameConnection(
            lambda c, m: self._on_host_message(host, m), lambda c, e: inbox.put_nowait(None)
        )
        await self._loop.connect_accepted_socket(lambda: host.ctl, parent)
        self._hosts.append(host)
        msg = await self._next(host, time.monotonic() + 15.0, f"host{h} to start")
        if msg[0] != "ready":
            raise MeshError(f"host{h} said {msg!r} instead of ready")
        return host

    def _on_host_message(self, host: _Host, msg: list[Any]) -> None:
        if msg[0] == "exited":
            self.exits[msg[1]] = ExitInfo(msg[2], msg[3], msg[4])
            self.client._poke()
        host.inbox.put_nowait(msg)

    async def _next(self, host: _Host, deadline: float, what: str) -> list[Any]:
        """The host's next control reply other than an exit notice."""
        while True:
            try:
                msg = await asyncio.wait_for(
                    host.inbox.get(), max(0.0, deadline - time.monotonic())
                )
            except TimeoutError:
                raise MeshError(f"timed out waiting for {what}") from None
            if msg is None:
                if host.ctl.frame_error is not None:
                    raise MeshError(
                        f"host{host.index} sent a bad frame ({host.ctl.frame_error}) while waiting for {what}"
                    )
                code = host.proc.poll()
                err = Path(host.console[1]).read_text(errors="replace")[-2000:]
                raise MeshError(
                    f"host{host.index} went away (exit {code}) while waiting for {what}:\n{err}"
                )
            if msg[0] != "exited":
                return msg

    # -- runtime control --------------------------------------------------------------------

    def set_mode(
        self,
        *,
        stream_to_client: bool,
        aggregate_window_sec: float | None = None,
        level: int | None = None,
    ) -> None:
        """SetMode to every forwarder and SetAggregate to the client; a window needs streaming."""
        if aggregate_window_sec is not None and not stream_to_client:
            raise ConfigError(
                f"aggregate_window_sec={aggregate_window_sec!r} needs stream_to_client=True"
            )

        async def apply() -> None:
            self.client.set_mode(stream_to_client)
            self.client.set_aggregate(aggregate_window_sec)

        self.stream_to_client = stream_to_client
        self.aggregate_window_sec = aggregate_window_sec
        self._call(apply(), 5.0, "set_mode")

    def flush(self, timeout: float = 10.0) -> BarrierOutcome:
        """Barrier across all connected forwarders; ends by `timeout`, naming missing ranks."""
        return self._call(self._flush(timeout), timeout + 5.0, "a flush barrier")

    async def _flush(self, timeout: float) -> BarrierOutcome:
        # every live forwarder: not gone, not finished (Bye), not in a child known to be dead
        expected = frozenset(
            r
            for r, c in self.client.forwarders.items()
            if c.active and r not in self.client.said_bye and r not in self.exits
        )
        not_waited = {r: self._why_not_waited(r) for r in self.ranks if r not in expected}
        barrier = self.client.start_sync_flush(expected)
        self.client.cast_force_sync(barrier)
        try:
            outcome = await asyncio.wait_for(asyncio.shield(barrier.future), timeout)
        except TimeoutError:
            self.client.barriers.expire(barrier)
            outcome = barrier.future.result()
        return dataclasses.replace(outcome, not_waited=not_waited)

    def _why_not_waited(self, rank: int) -> NotWaited:
        if rank in self.exits:
            return "exited"
        if rank in self.client.said_bye:
            return "finished"
        return "disconnected" if rank in self.client.forwarders else "never_connected"

    def kill(
        self, rank: int, sig: int = signal.SIGKILL, reason: str = "killed by the test"
    ) -> bool:
        """Signal one child through its host; returns once the signal was sent (False if
        the child had already exited)."""
        host = self._hosts[self.host_of[rank]]

        async def kill() -> bool:
            host.ctl.send(("kill", rank, int(sig), reason))
            msg = await self._next(
                host, time.monotonic() + 10.0, f"host{host.index} to signal rank {rank}"
            )
            return bool(msg[2])

        return self._call(kill(), 15.0, f"rank {rank} to be signalled")

    def attack_surface(self, rank: int) -> dict[str, str]:
        """The sockets a local peer could attack for `rank` (the hostile_peer fault)."""
        return {
            "channel": os.path.join(self.sockdir, f"c{rank}.sock"),
            "client": self.client.address,
        }

    def inject(self, rank: int, what: str, *args: Any) -> None:
        """Fault injection on the rank's host: "close_channel" (that rank's channel),
        "break_files" or "slow_files" (delay) for the whole host. Delivered in order with
        every other control message to that host."""
        host = self._hosts[self.host_of[rank]]
        msg = ("close_channel", rank) if what == "close_channel" else (what, *args)
        self._loop.call_soon_threadsafe(host.ctl.send, msg)

    def wait_children(self, timeout: float) -> dict[int, ExitInfo]:
        """Wait until every child exited on its own; MeshError names the ranks still running."""

        async def wait() -> bool:
            return await self.client.wait_until(
                lambda: all(r in self.exits for r in self.ranks), time.monotonic() + timeout
            )

        if not self._call(wait(), timeout + 5.0, "children to exit"):
            running = [r for r in self.ranks if r not in self.exits]
            raise MeshError(f"ranks {running} still running after {timeout:.1f}s")
        return dict(self.exits)

    # -- stop -------------------------------------------------------------------------------

    def stop(self, timeout: float = 15.0) -> StopOutcome:
        """Barrier first, then quiesce and stop the children, then tear everything down."""
        if self._stopped is not None:
            return self._stopped
        outcome = self._call(self._stop(timeout), timeout + 10.0, "stop")
        self._stopped = outcome
        self.close()
        return outcome

    async def _stop(self, timeout: float) -> StopOutcome:
        t0 = time.monotonic()
        deadline = t0 + timeout
        self.journal(Ev.STOP_BEGIN)
        problems: list[StopProblem] = []
        barrier = await self._flush(min(timeout * 0.3, 5.0))
        if not barrier.completed:
            problems.append(
                StopProblem(
                    "barrier_incomplete",
                    ranks=barrier.missing_ranks,
                    detail=f"v{barrier.version} {barrier.status}",
                )
            )
        tails: dict[int, dict[str, list[str]]] = {}
        files: list[str] = []
        holders: list[PipeHolder] = []
        for host in self._hosts:
            host.ctl.send(("stop", max(1.0, (deadline - time.monotonic()) * 0.8)))
        silent: list[_Host] = []
        for host in self._hosts:
            try:
                msg = await self._next(
                    host, deadline, f"host{host.index} to stop ranks {host.ranks}"
                )
            except MeshError as exc:
                if host.proc.poll() is not None:  # it died: that is not a missed deadline
                    problems.append(
                        StopProblem(
                            "host_lost", tuple(host.ranks), host=host.index, detail=str(exc)
                        )
                    )
                    continue
                silent.append(host)
                why = f"host{host.index} did not answer within the stop deadline ({timeout:g} s)"
                for rank in host.ranks:
                    if rank not in self.exits:
                        self.unanswered[rank] = why
                problems.append(
                    StopProblem(
                        "host_unanswered",
                        tuple(host.ranks),
                        host=host.index,
                        detail=f"{why}; it was killed at the deadline ({exc})",
                    )
                )
                continue
            result = msg[1]
            for rank, (code, sig, killed) in result["exits"].items():
                self.exits[int(rank)] = ExitInfo(code, sig, killed)
            tails.update({int(r): t for r, t in result["tails"].items()})
            files.extend(result["files"])
            holders += (
                PipeHolder(int(h["rank"]), str(h["stream"]), int(h["pid"]), str(h["cmdline"]))
                for h in result.get("held", ())
            )
        if self.config.enable_log_forwarding:
            await self.client.wait_until(
                lambda: all(
                    r in self.client.said_bye
                    or r in self.client.lost
                    or r not in self.client.forwarders
                    for r in self.ranks
                ),
                deadline,  # a deadline is a deadline: no grace after it
            )
        unconfirmed = tuple(r for r in self.ranks if r not in self.client.said_bye)
        clean = [r for r in unconfirmed if self._exited_cleanly(r)]
        if self.config.enable_log_forwarding and clean:
            problems.append(StopProblem("tails_unconfirmed", tuple(clean)))
        self.client.print_aggregates()
        for host in self._hosts:
            host.ctl.send(("shutdown",))
        for host in self._hosts:  # one that answered gets a moment to exit; a silent one not
            grace = 0.0 if host in silent else 1.0
            await self._reap_host(host, max(time.monotonic() + grace, deadline))
        self.journal(Ev.STOP_END)
        return StopOutcome(
            barrier,
            dict(self.exits),
            tails,
            files,
            unconfirmed,
            problems,
            tuple(clean),
            time.monotonic() - t0,
            tuple(holders),
            tuple(sorted(self.unanswered)),
        )

    def _exited_cleanly(self, rank: int) -> bool:
        info = self.exits.get(rank)
        return (
            info is not None and info.code == 0 and info.signal is None and not info.killed_by_stack
        )

    async def _reap_host(self, host: _Host, deadline: float) -> None:
        if host.proc.poll() is None:
            await process_exit(host.proc.pid, deadline)
        if host.proc.poll() is None:
            host.proc.kill()
            host.proc.wait()

    # -- evidence ---------------------------------------------------------------------------

    @property
    def delivered(self) -> dict[tuple[int, str], list[bytes]]:
        return self.client.delivered

    @property
    def delivered_blobs(self) -> dict[tuple[int, str], list[bytes]]:
        """`delivered` as the client keeps it: batches of lines joined by `\\n`."""
        return self.client.delivered_blobs

    def read_journal(self) -> list[Event]:
        return read_journal(self.journal_dir)

    # -- cleanup ----------------------------------------------------------------------------

    def close(self) -> None:
        """Kill whatever still runs and remove sockets; idempotent, never raises."""
        if self._closed:
            return
        self._closed = True
        for host in self._hosts:
            if host.proc.poll() is None:
                host.proc.kill()  # its children die with it (parent-death signal)
        for host in self._hosts:
            with contextlib.suppress(subprocess.TimeoutExpired):
                host.proc.wait(5.0)

        async def shutdown() -> None:
            self.client.close()
            for host in self._hosts:
                host.ctl.close()
            await asyncio.sleep(0)

        with contextlib.suppress(Exception):
            self._call(shutdown(), 5.0, "the client to close")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self._loop.close()
        self.journal.close()
        shutil.rmtree(self.sockdir, ignore_errors=True)
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self.spare_host:  # warms up while the caller reads its evidence
            spare.start(self.python, os.environ, self._child_modules)

    def __enter__(self) -> LoggingMeshClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
