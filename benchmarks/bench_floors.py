"""Floors under the scaling figures: what the process model costs before the stack does
anything, measured on this machine.

    python benchmarks/bench_floors.py [--children 64] [--repeat 5]

- fork: the host forks each Python child from itself (forkserver.py). Forking N children
  from a process that has imported what the host imports, behind a start gate, is the
  host's serial part of spawn().
- start: those children each starting what the least forwarder needs (a thread running a
  new asyncio loop that connects to a Unix socket in the parent and says one byte), all
  at once when the gate opens, until the parent has every byte: their CPU for it, and the
  wall time, the floor of the children's part of spawn().
- exit: those children exiting at once (`os._exit(0)` as a stopped child does), from the
  gate's opening until every one is reaped; their CPU from then on (schedstat) is the
  kernel tearing down a forked address space, which every stop() pays per child.
- delivery: the CPU of one message between two asyncio processes over a Unix socket (the
  sender's write plus the receiver's wake-up, read and callback), from a ping-pong. A
  barrier costs the stack six per child: ForceSync to the child, Sync to each of the
  host's two senders, a marker back on each, the ack to the client. A stop() costs at
  least seven more: Stop to the child, EOF on each pipe, the tail and each stream's last
  Flush back to the child, the tail and the Bye to the client.

Prints medians, and the floor each puts under the 64-children targets on this machine's
cores. Nothing here asserts a figure: read it beside bench_scaling.py's table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import select
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_meshlog.stack.forkserver import StartGate

sys.path.insert(0, str(Path(__file__).resolve().parent))

BARRIER_DELIVERIES_PER_CHILD = 6
STOP_DELIVERIES_PER_CHILD = 7


def _on_cpu(pid: int) -> float:
    """Seconds `pid` has run so far (schedstat: nanoseconds, unlike stat's clock ticks)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


@dataclass
class _Brood:
    """Children forked from this process, every one of them waiting at `gate`."""

    pids: list[int]
    gate: StartGate
    fork_s: float  # the parent's wall time for the forks
    cpu_at_gate: float  # their CPU so far: the child's side of fork


def _fork_at_gate(children: int, then: Callable[[], None]) -> _Brood:
    """Fork `children` from this process, warmed as a host is; each runs `then` once the
    gate opens, and exits. Returns once every child has said it waits at the gate."""
    from pytest_meshlog.stack import host_control  # noqa: F401  (what the host imports)
    from pytest_meshlog.stack.forkserver import StartGate, warm_up

    warm_up("fake_procs")  # what the host imports and compiles before its first fork
    gate, pids = StartGate(), []
    ready_r, ready_w = os.pipe()
    t0 = time.perf_counter()
    for _ in range(children):
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            os.write(ready_w, b"r")
            gate.wait()
            then()
            os._exit(0)
        pids.append(pid)
    fork_s = time.perf_counter() - t0
    os.close(ready_w)
    waiting, deadline = 0, time.monotonic() + 30
    while waiting < children:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([ready_r], [], [], left)[0]:
            raise TimeoutError(
                f"{children - waiting} of {children} children never reached the gate"
            )
        waiting += len(os.read(ready_r, children))
    os.close(ready_r)
    return _Brood(pids, gate, fork_s, sum(_on_cpu(pid) for pid in pids))


def fork_and_exit(children: int) -> tuple[float, float, float]:
    """(fork wall s, exit wall s, exit CPU s) for `children` forked from this process; the
    exit CPU is the children's CPU after the gate opened (their total at reaping, less
    what each had run by then: the child's side of fork)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    brood = _fork_at_gate(children, lambda: None)
    opened = time.perf_counter()
    brood.gate.open()
    for pid in brood.pids:
        os.waitpid(pid, 0)
    reaped = time.perf_counter()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return brood.fork_s, reaped - opened, cpu - brood.cpu_at_gate


def _least_forwarder(path: str) -> None:
    """In a child: a thread with a new asyncio loop connects to `path` and says one byte."""

    async def hello() -> None:
        _, writer = await asyncio.open_unix_connection(path)
        writer.write(b"h")
        await writer.drain()

    thread = threading.Thread(target=lambda: asyncio.new_event_loop().run_until_complete(hello()))
    thread.start()
    thread.join()


def fork_and_start(children: int) -> tuple[float, float]:
    """(wall s, CPU s) from the gate's opening until `children` forked children have each
    started the least forwarder and been heard from (their CPU before the gate is left
    out, as in `fork_and_exit`)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "d.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(children)
        server.settimeout(30)  # accept and recv alike: a child that never says is an error
        hold_r, hold_w = os.pipe()  # the children exit when it closes: after the count

        def start_then_hold() -> None:
            os.close(hold_w)
            _least_forwarder(path)
            os.read(hold_r, 1)

        brood = _fork_at_gate(children, start_then_hold)
        os.close(hold_r)
        opened = time.perf_counter()
        brood.gate.open()
        conns = []
        for _ in range(children):
            conn, _ = server.accept()
            conn.settimeout(30)
            conn.recv(1)
            conns.append(conn)
        heard = time.perf_counter()
        cpu = sum(_on_cpu(pid) for pid in brood.pids) - brood.cpu_at_gate
        os.close(hold_w)
        for pid in brood.pids:
            os.waitpid(pid, 0)
        for sock in (*conns, server):
            sock.close()
    return heard - opened, cpu


class _Ping(asyncio.Protocol):
    def __init__(self, rounds: int, done: asyncio.Future[None]) -> None:
        self.left, self.done = rounds, done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport
        transport.write(b"p")

    def data_received(self, data: bytes) -> None:
        self.left -= len(data)
        if self.left > 0:
            self.transport.write(b"p")
        elif not self.done.done():
            self.done.set_result(None)


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def delivery_cpu(rounds: int) -> float:
    """CPU seconds per one-way message between two asyncio processes (both sides' CPU)."""
    a, b = socket.socketpair()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    pid = os.fork()
    if pid == 0:
        a.close()

        async def echo() -> None:
            loop = asyncio.get_running_loop()
            transport, _ = await loop.connect_accepted_socket(_Echo, b)
            while not transport.is_closing():
                await asyncio.sleep(0.05)

        asyncio.run(echo())
        os._exit(0)
    b.close()

    async def ping() -> float:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        t0 = time.process_time()
        transport, _ = await loop.connect_accepted_socket(lambda: _Ping(rounds, done), a)
        await done
        spent = time.process_time() - t0
        transport.close()
        return spent

    mine = asyncio.run(ping())
    os.waitpid(pid, 0)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    theirs = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return (mine + theirs) / (2 * rounds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--children", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=20_000, help="ping-pong round trips")
    args = parser.parse_args()
    n, cores = args.children, os.cpu_count() or 1
    forks = [fork_and_exit(n) for _ in range(args.repeat)]
    fork_s = statistics.median(f[0] for f in forks)
    exit_s = statistics.median(f[1] for f in forks)
    exit_cpu = statistics.median(f[2] for f in forks)
    delivery = statistics.median(delivery_cpu(args.rounds) for _ in range(args.repeat))
    starts = [fork_and_start(n) for _ in range(args.repeat)]
    start_s = statistics.median(s[0] for s in starts)
    start_cpu = statistics.median(s[1] for s in starts)
    print(f"{n} children, {cores} cores, medians of {args.repeat}")
    print(f"fork, host's wall:       {fork_s * 1e3:8.1f} ms  ({fork_s / n * 1e3:.2f} ms a child)")
    print(f"exit, wall to reaped:    {exit_s * 1e3:8.1f} ms")
    print(
        f"exit, children's CPU:    {exit_cpu * 1e3:8.1f} ms  ({exit_cpu / n * 1e3:.2f} ms a child)"
    )
    print(f"one delivery, CPU:       {delivery * 1e6:8.1f} us  (both sides)")
    barrier = n * BARRIER_DELIVERIES_PER_CHILD * delivery / cores
    print(
        f"floor of a barrier:      {barrier * 1e3:8.1f} ms  "
        f"({BARRIER_DELIVERIES_PER_CHILD} deliveries a child over {cores} cores)"
    )
    stop = (
        barrier + n * (STOP_DELIVERIES_PER_CHILD * delivery) / cores + max(exit_s, exit_cpu / cores)
    )
    print(f"floor of stop():         {stop * 1e3:8.1f} ms  (its barrier, "
          f"{STOP_DELIVERIES_PER_CHILD} more deliveries a child, the exits)")  # fmt: skip
    print(f"start, wall to all said:  {start_s * 1e3:7.1f} ms")
    print(
        f"start, children's CPU:   {start_cpu * 1e3:8.1f} ms  ({start_cpu / n * 1e3:.2f} ms a child)"
    )
    spawn = fork_s + max(start_s, start_cpu / cores)
    print(f"floor of spawn():        {spawn * 1e3:8.1f} ms  (the forks, then the starts)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
