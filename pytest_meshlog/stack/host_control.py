"""A bootstrap host's life: start-up (directly, or as a warm spare waiting for its mesh),
then serving the driver's control messages until shutdown. The work itself is the
`bootstrap.BootstrapProcManager`; the entry point is `host`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import sys
import time
from typing import Any

from . import spare
from .bootstrap import BootstrapProcManager
from .channel import FrameConnection
from .config import ConfigError, StackConfig
from .forkserver import warm_up
from .journal import Ev, Journal
from .patches import apply_patches
from .procs import become_subreaper


async def _serve(host: int, ctl_fd: int, journal_dir: str | None) -> int:
    journal = Journal(journal_dir, f"host{host}")
    journal(Ev.HOST_STARTED, host=host, pid=os.getpid(), subreaper=become_subreaper())
    try:
        config = StackConfig.from_env()
    except ConfigError as exc:
        print(f"meshlog bootstrap: {exc}", file=sys.stderr)
        return 2
    loop = asyncio.get_running_loop()
    sock = socket.socket(fileno=ctl_fd)
    sock.setblocking(False)
    inbox: asyncio.Queue[list[Any] | None] = asyncio.Queue()
    ctl = FrameConnection(lambda c, m: inbox.put_nowait(m), lambda c, e: inbox.put_nowait(None))
    await loop.connect_accepted_socket(lambda: ctl, sock)
    manager = BootstrapProcManager(host, config, journal, ctl)
    ctl.send(("ready", os.getpid()))
    try:
        while True:
            msg = await inbox.get()
            if msg is None or msg[0] == "shutdown":
                break
            kind = msg[0]
            if kind == "spawn":
                await manager.spawn(msg[1], msg[2] if len(msg) > 2 else None)
            elif kind == "kill":
                sent = manager.kill(msg[1], msg[2], msg[3])
                if sent and msg[2] == signal.SIGSTOP:
                    await manager.wait_stopped(msg[1], time.monotonic() + 5.0)
                ctl.send(("signalled", msg[1], sent))
            elif kind == "close_channel":
                manager.close_channel(msg[1])
            elif kind == "break_files":
                manager.break_files()
            elif kind == "redirect_files":
                manager.redirect_files(msg[1])
            elif kind == "slow_files":
                manager.slow_files(msg[1])
            elif kind == "stop":
                result = await manager.stop(msg[1])
                ctl.send(("stopped", result))
    finally:
        manager.hard_kill()
        await ctl.flush_out(time.monotonic() + 1.0)
        ctl.close()
        journal(Ev.HOST_EXIT)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_meshlog.stack.host")
    parser.add_argument("--host", type=int, default=None)
    parser.add_argument("--ctl-fd", type=int, required=True)
    parser.add_argument("--journal-dir", default=None)
    parser.add_argument("--spare", action="store_true", help="wait for a mesh (stack.spare)")
    parser.add_argument("--warm", action="append", default=[], help="module to import first")
    args = parser.parse_args(argv)
    if args.spare:
        for module in args.warm:
            warm_up(module)
        with contextlib.suppress(OSError):  # a driver that dropped us: EOF just below
            os.write(args.ctl_fd, spare.READY)  # warm: read by the driver before its setup
        setup = _wait_for_mesh(args.ctl_fd)
        if setup is None:
            return 0  # dropped before any mesh took it
        args.host, args.journal_dir = setup["host"], setup["journal_dir"]
        os.environ.clear()
        os.environ.update(setup["env"])
    if args.host is None:
        parser.error("--host is required unless --spare")
    apply_patches("host")  # MESHLOG_STACK_PATCH, from a test tool outside the stack
    return asyncio.run(_serve(args.host, args.ctl_fd, args.journal_dir))


def _wait_for_mesh(ctl_fd: int) -> dict[str, Any] | None:
    """A spare's wait: the mesh's setup and its console files (stdout, stderr), or None
    if the driver closed the socket instead."""
    sock = socket.socket(fileno=ctl_fd)
    try:
        head, fds, _flags, _addr = socket.recv_fds(sock, 4, 2)
        if len(head) < 4 or len(fds) != 2:
            return None
        (size,) = struct.unpack(">I", head)
        payload = bytearray()
        while len(payload) < size:
            more = sock.recv(size - len(payload))
            if not more:
                return None
            payload += more
    finally:
        sock.detach()  # the fd stays open: it becomes the control connection
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    for fd in fds:
        os.close(fd)
    setup: dict[str, Any] = json.loads(payload)
    return setup
