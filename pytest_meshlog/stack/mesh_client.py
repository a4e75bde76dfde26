"""LoggingMeshClient: the driver's handle on a mesh (spawn, set_mode, flush, kill and
inject, stop, close).

The stack's asyncio loop runs in one background thread of the driver; these methods are
synchronous, and each waits with a deadline. Every call is checked against the client's
state (`lifecycle`). Whatever happens, `close()` leaves no process, socket or directory
behind. The hosts' side is `hosts`, the teardown `stopping`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from . import bytecode, spare
from .client import LogClientActor, Sink
from .config import ConfigError, StackConfig
from .hosts import HostLink, connect_host
from .journal import Ev, Event, Journal, read_journal
from .lifecycle import LIVE, STOPPABLE, Lifecycle, MeshState
from .outcomes import BarrierOutcome, ExitInfo, MeshError, NotWaited, StopOutcome
from .outcomes import PipeHolder as PipeHolder
from .private_dirs import private_dir
from .procs import sweep_stale
from .stalls import Stall, during, watch
from .stopping import stop_mesh

T = TypeVar("T")
FAULT_ENV_PREFIX = "MESHLOG_FAULT_"
"""Fault switches read by hosts; given only through `extra_env` (the harness's faults)."""
HOST_LEAVE_S = 1.0
"""How long a host closed without `stop()` has to end its children and leave."""

__all__ = ["ChildSpec", "ExitInfo", "LoggingMeshClient", "MeshError", "PipeHolder", "StopOutcome"]


@dataclass(frozen=True)
class ChildSpec:
    """What to run as one child; its rank is its index in the spawn list."""

    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)


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
        bytecode_cache: Path | None = None,
    ) -> None:
        self.config = config if config is not None else StackConfig.from_env()
        if hosts < 1:
            raise ConfigError(f"hosts={hosts!r} must be at least 1")
        if aggregate_window_sec is not None and not stream_to_client:
            raise ConfigError("aggregate_window_sec is set but stream_to_client is false")
        self.hosts = hosts
        self.python = python
        self.spare_host = spare_host  # take a warm host if one waits; leave one at close
        self.bytecode_cache = bytecode_cache  # hosts share compiled modules there (bytecode.py)
        self._child_modules: set[str] = set()
        self.extra_env = dict(extra_env or {})
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(private_dir("ml-work-"))
        self.journal_dir = self.workdir / "journal"
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self.record_dir = self.workdir / "records"
        self.record_dir.mkdir(exist_ok=True)
        self.sockdir = private_dir()  # claimed by this process, as the workdir it made
        self.journal = Journal(self.journal_dir, "driver")
        self._unwatch = watch().hold(self._journal_stall)
        for path, owner in sweep_stale(os.path.dirname(self.sockdir)):  # of killed drivers
            self.journal(Ev.STALE_DIR_REMOVED, path=path, owner_pid=owner)
        self.client = LogClientActor(
            os.path.join(self.sockdir, "client.sock"), self.journal, sink, consume_delay,
            batch_lines=self.config.read_log_buffer,
        )  # fmt: skip
        self.client.stream_to_client = stream_to_client
        self.client.streaming_was_off = not stream_to_client
        self.stream_to_client = stream_to_client
        self.aggregate_window_sec = aggregate_window_sec
        self.exits: dict[int, ExitInfo] = {}
        self.unanswered: dict[int, str] = {}
        """rank -> why its end is unknown (its host did not answer stop by the deadline)."""
        self.host_of: dict[int, int] = {}
        self._hosts: list[HostLink] = []
        self._lifecycle = Lifecycle(type(self).__name__)
        self._outcome: StopOutcome | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="meshlog-stack", daemon=True
        )
        self._thread.start()
        self._call(self.client.start(), 10.0, "the log client to listen")
        self.client.set_aggregate(aggregate_window_sec)

    # -- plumbing ---------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
        started = time.monotonic()
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise MeshError(
                f"timed out after {timeout:.1f}s waiting for {what}{during(started)}"
            ) from None

    def _journal_stall(self, stall: Stall) -> None:
        """A span in which the driver was not run: deadlines that ran out in it are the
        machine's, and the journal says so next to them."""
        self.journal(Ev.PROCESS_STALLED, **stall.fields())

    @property
    def state(self) -> MeshState:
        """Where this client is in its life: new, spawning, spawn_failed, running,
        stopping, stopped or closed (see `lifecycle`)."""
        return self._lifecycle.state

    @property
    def ranks(self) -> list[int]:
        return sorted(self.host_of)

    @property
    def batch_lines(self) -> int:
        """Lines per batch (HYPERACTOR_READ_LOG_BUFFER): what a crash may lose at most."""
        return self.config.read_log_buffer

    @property
    def host_links(self) -> list[HostLink]:
        return self._hosts

    # -- spawn ------------------------------------------------------------------------------

    def spawn(self, children: Sequence[ChildSpec], timeout: float = 30.0) -> None:
        """Start the hosts and children; returns once every forwarder is connected (or its
        child already exited)."""
        self._lifecycle.check("spawn", ("new",))
        if not children:
            raise ConfigError("spawn needs at least one child")
        self.config.check_log_dir()
        self._lifecycle.move("spawn", ("new",), "spawning")
        try:
            self._call(self._spawn(list(children), timeout), timeout + 5, "spawn")
        except BaseException:
            self._lifecycle.move("spawn", ("spawning",), "spawn_failed")
            raise
        self._lifecycle.move("spawn", ("spawning",), "running")

    async def _spawn(self, children: list[ChildSpec], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        per_host = -(-len(children) // self.hosts)
        base_env = {**_ambient(os.environ), **self.config.to_env(), **self.extra_env}
        env = bytecode.host_env(base_env, self.bytecode_cache)
        for h in range(self.hosts):  # all start at once; each is waited for below
            host = await connect_host(
                h, python=self.python, env=env, workdir=self.workdir,
                journal_dir=self.journal_dir, use_spare=self.spare_host, on_exit=self._on_exit,
            )  # fmt: skip
            host.on_fallback = self.client.on_fallback
            self._hosts.append(host)
        for h, host in enumerate(self._hosts):
            await host.wait_ready()
            host.ranks = list(range(h * per_host, min(len(children), (h + 1) * per_host)))
            specs = [self._child_spec(h, rank, children[rank], base_env) for rank in host.ranks]
            host.send(("spawn", specs, self.client.secret))  # over the trusted socketpair
        for host in self._hosts:
            waiting = set(host.ranks)
            while waiting:
                what = f"host{host.index} to spawn ranks {sorted(waiting)}"
                msg = await host.next_reply(deadline, what)
                if msg[0] == "spawned":
                    waiting.discard(msg[1])
        forwarding = self.config.enable_log_forwarding
        if forwarding and not await self.client.wait_until(self._all_forwarders_in, deadline):
            missing = [
                r for r in self.ranks if r not in self.client.forwarders and r not in self.exits
            ]
            raise MeshError(f"forwarders of ranks {missing} did not connect within {timeout:.1f}s")

    def _child_spec(
        self, h: int, rank: int, child: ChildSpec, base_env: dict[str, str]
    ) -> dict[str, Any]:
        """What host `h` needs to start `rank`: its argv and its whole environment."""
        self.host_of[rank] = h
        env = {**base_env, **child.env}
        env.update(
            MESHLOG_RANK=str(rank),
            MESHLOG_HOSTNAME=f"host{h}",
            MESHLOG_PROC_ID=f"proc[{rank}]",
            MESHLOG_JOURNAL_DIR=str(self.journal_dir),
            MESHLOG_RECORD_DIR=str(self.record_dir),
            MESHLOG_STREAM_TO_CLIENT="1" if self.stream_to_client else "0",
        )
        if self.config.enable_log_forwarding:
            env["BOOTSTRAP_LOG_CHANNEL"] = os.path.join(self.sockdir, f"c{rank}.sock")
            env["MESHLOG_CLIENT_ADDR"] = self.client.address
        else:
            env.pop("BOOTSTRAP_LOG_CHANNEL", None)
            env.pop("MESHLOG_CLIENT_ADDR", None)
        argv = child.argv
        if len(argv) > 2 and argv[1] == "-m":
            self._child_modules.add(argv[2])
        return {"rank": rank, "argv": list(argv), "env": env}

    def _all_forwarders_in(self) -> bool:
        return all(r in self.client.forwarders or r in self.exits for r in self.ranks)

    def _on_exit(self, rank: int, info: ExitInfo) -> None:
        self.exits[rank] = info
        self.client.poke()

    # -- runtime control --------------------------------------------------------------------

    def set_mode(
        self,
        *,
        stream_to_client: bool,
        aggregate_window_sec: float | None = None,
        level: int | None = None,
    ) -> None:
        """SetMode to every forwarder and SetAggregate to the client; a window needs streaming."""
        self._lifecycle.check("set_mode", LIVE)
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
        self._lifecycle.check("flush", LIVE)
        return self._call(self.barrier(timeout), timeout + 5.0, "a flush barrier")

    async def barrier(self, timeout: float) -> BarrierOutcome:
        """One barrier (on the stack's loop), answered by `timeout` at the latest."""
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
        self._lifecycle.check("kill", LIVE)
        host = self._hosts[self.host_of[rank]]

        async def kill() -> bool:
            host.send(("kill", rank, int(sig), reason))
            what = f"host{host.index} to signal rank {rank}"
            msg = await host.next_reply(time.monotonic() + 10.0, what)
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
        "break_files", "slow_files" (delay) or "redirect_files" (path) for the whole
        host. Delivered in order with every other control message to that host."""
        self._lifecycle.check("inject", LIVE)
        host = self._hosts[self.host_of[rank]]
        msg = ("close_channel", rank) if what == "close_channel" else (what, *args)
        self._loop.call_soon_threadsafe(host.send, msg)

    def wait_children(self, timeout: float) -> dict[int, ExitInfo]:
        """Wait until every child exited on its own; MeshError names the ranks still running."""
        self._lifecycle.check("wait_children", LIVE)

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
        """Barrier first, then quiesce and stop the children, then tear everything down.
        Once stopped, the same outcome again."""
        if self._outcome is not None:
            return self._outcome
        self._lifecycle.move("stop", STOPPABLE, "stopping")
        outcome = self._call(stop_mesh(self, timeout), timeout + 10.0, "stop")
        self._outcome = outcome
        self._lifecycle.move("stop", ("stopping",), "stopped")
        self.close()
        return outcome

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
        if self.state == "closed":
            return
        self._lifecycle.state = "closed"  # from any state
        self._ask_hosts_to_leave()
        for host in self._hosts:
            host.kill()
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
        self._unwatch()
        self.journal.close()
        shutil.rmtree(self.sockdir, ignore_errors=True)
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self.spare_host:  # warms up while the caller reads its evidence
            spare.start(
                self.python, bytecode.host_env(os.environ, self.bytecode_cache), self._child_modules
            )

    def _ask_hosts_to_leave(self) -> None:
        """A host still running when the mesh closes without `stop()` (a failed spawn, a
        test that raised) is asked to shut down first: on the way out it ends its children
        and every descendant it adopted. SIGKILL would leave their grandchildren running,
        re-parented to PID 1. One that has not left by `HOST_LEAVE_S` is killed."""
        live = [h for h in self._hosts if h.proc.poll() is None]
        if not live or not self._thread.is_alive():
            return

        async def leave() -> None:
            for host in live:
                host.send(("shutdown",))
            deadline = time.monotonic() + HOST_LEAVE_S
            for host in live:
                await host.reap(deadline)  # killed at the deadline

        with contextlib.suppress(Exception):
            self._call(leave(), HOST_LEAVE_S + 1.0, "the hosts to leave")

    def __enter__(self) -> LoggingMeshClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ambient(environ: Mapping[str, str]) -> dict[str, str]:
    """The driver's environment as hosts inherit it, without fault switches: one left set
    in a user's shell broke every file write of every mesh, and the file losses were then
    explained by the very errors it caused."""
    return {k: v for k, v in environ.items() if not k.startswith(FAULT_ENV_PREFIX)}
