"""Shared bits of the stack's integration tests: real meshes of tests/children/simple.py."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pytest_meshlog.stack import ChildSpec, LoggingMeshClient, StackConfig
from pytest_meshlog.stack.journal import Event

SIMPLE = str(Path(__file__).parent / "children" / "simple.py")


def child(mode: str, n: int = 3) -> ChildSpec:
    return ChildSpec([sys.executable, SIMPLE, mode, str(n)])


class Captured:
    """A sink that keeps what the client printed, per target."""

    def __init__(self) -> None:
        self.out: list[bytes] = [b"", b""]

    def __call__(self, target: int, data: bytes) -> None:
        self.out[target] += data


@contextmanager
def mesh(
    tmp_path: Path, children: Sequence[ChildSpec], *, hosts: int = 1, **config: Any
) -> Iterator[LoggingMeshClient]:
    aggregate = config.pop("aggregate_window_sec", None)
    cfg = StackConfig(**{"enable_log_forwarding": True, **config})
    client = LoggingMeshClient(
        cfg, workdir=tmp_path / "mesh", hosts=hosts, aggregate_window_sec=aggregate, sink=Captured()
    )
    try:
        client.spawn(children)
        yield client
    finally:
        client.close()


def events(client: LoggingMeshClient, name: str, **match: Any) -> list[Event]:
    return [
        e for e in client.read_journal()
        if e["ev"] == name and all(e.get(k) == v for k, v in match.items())
    ]  # fmt: skip


def wait_delivered(
    client: LoggingMeshClient, rank: int, stream: str, n: int, timeout: float = 20
) -> None:
    """Flush until `n` lines of the rank's stream reached the client (the child may start
    writing later than spawn() returns); each barrier covers what was written before it."""

    deadline = time.monotonic() + timeout
    while len(client.delivered.get((rank, stream), ())) < n:
        assert time.monotonic() < deadline, f"rank {rank} {stream}: fewer than {n} lines arrived"
        client.flush(5)
        time.sleep(0.005)
