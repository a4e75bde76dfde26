"""The driver's link to one bootstrap host: starting it (a warm spare, or a new process),
its control socket and the replies on it, and reaping it."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import spare
from .channel import FrameConnection
from .outcomes import ExitInfo, MeshError
from .procs import set_parent_death_signal, time_spent
from .stalls import during
from .waits import process_exit

OnExit = Callable[[int, ExitInfo], None]
"""Told of each child exit a host reports (rank, how it ended), as it arrives."""
OnFallback = Callable[[frozenset[int], list[Any]], None]
"""Given each `("fallback", rank, log)` a host sends (its ranks, the message): the lines of
a rank whose forwarder is gone, delivered by the host itself (see `sender`)."""


@dataclass
class HostLink:
    """One host process and its control connection; its replies queue in `inbox`."""

    index: int
    proc: subprocess.Popen[bytes]
    console: tuple[str, str]
    on_exit: OnExit
    ranks: list[int] = field(default_factory=list)
    on_fallback: OnFallback | None = None
    inbox: asyncio.Queue[list[Any] | None] = field(default_factory=asyncio.Queue)
    ctl: FrameConnection = field(init=False)

    def __post_init__(self) -> None:
        self.ctl = FrameConnection(
            lambda c, m: self._on_message(m), lambda c, e: self.inbox.put_nowait(None)
        )

    def _on_message(self, msg: list[Any]) -> None:
        if msg[0] == "fallback":  # data, not a reply: straight to the client, in order
            if self.on_fallback is not None:
                self.on_fallback(frozenset(self.ranks), msg)
            return
        if msg[0] == "exited":
            self.on_exit(msg[1], ExitInfo(msg[2], msg[3], msg[4]))
        self.inbox.put_nowait(msg)

    def send(self, msg: tuple[Any, ...]) -> None:
        self.ctl.send(msg)

    async def next_reply(self, deadline: float, what: str) -> list[Any]:
        """The host's next control reply other than an exit notice; MeshError (saying
        `what` was waited for) at the deadline or if the host goes away."""
        started = time.monotonic()
        while True:
            try:
                msg = await asyncio.wait_for(
                    self.inbox.get(), max(0.0, deadline - time.monotonic())
                )
            except TimeoutError:
                spent = time_spent(self.proc.pid)  # starved or stuck: the reader can tell
                raise MeshError(
                    f"timed out waiting for {what}"
                    + (f" (host{self.index}: {spent})" if spent else "")
                    + during(started)
                ) from None
            if msg is None:
                raise self._gone(what)
            if msg[0] != "exited":
                return msg

    def _gone(self, what: str) -> MeshError:
        if self.ctl.frame_error is not None:
            return MeshError(
                f"host{self.index} sent a bad frame ({self.ctl.frame_error}) while waiting for {what}"
            )
        code = self.proc.poll()
        err = Path(self.console[1]).read_text(errors="replace")[-2000:]
        return MeshError(
            f"host{self.index} went away (exit {code}) while waiting for {what}:\n{err}"
        )

    async def wait_ready(self) -> None:
        msg = await self.next_reply(time.monotonic() + 15.0, f"host{self.index} to start")
        if msg[0] != "ready":
            raise MeshError(f"host{self.index} said {msg!r} instead of ready")

    async def reap(self, deadline: float) -> None:
        """Wait (on its pidfd) until the host exits; killed at the deadline."""
        if self.proc.poll() is None:
            await process_exit(self.proc.pid, deadline)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # its children die with it (parent-death signal)


async def connect_host(
    index: int,
    *,
    python: str,
    env: Mapping[str, str],
    workdir: Path,
    journal_dir: Path,
    use_spare: bool,
    on_exit: OnExit,
) -> HostLink:
    """Start host `index` (a warm spare if one fits, else a new process) and connect to its
    control socket; the caller waits for it to be ready (`HostLink.wait_ready`)."""
    out = str(workdir / f"console-host{index}.stdout")
    err = str(workdir / f"console-host{index}.stderr")
    warm = spare.take(python, dict(env)) if use_spare else None
    with open(out, "wb") as fo, open(err, "wb") as fe:
        if warm is not None:
            setup = {"host": index, "journal_dir": str(journal_dir), "env": dict(env)}
            warm.hand_over(setup, (fo.fileno(), fe.fileno()))
            proc, parent = warm.proc, warm.sock
        else:
            parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            proc = subprocess.Popen(
                [python, "-m", spare.HOST_MODULE, "--host", str(index),
                 "--ctl-fd", str(child.fileno()), "--journal-dir", str(journal_dir)],
                stdin=subprocess.DEVNULL, stdout=fo, stderr=fe, env=dict(env),
                pass_fds=(child.fileno(),), preexec_fn=set_parent_death_signal,
            )  # fmt: skip
            child.close()
    parent.setblocking(False)
    host = HostLink(index, proc, (out, err), on_exit)
    await asyncio.get_running_loop().connect_accepted_socket(lambda: host.ctl, parent)
    return host
