"""Benchmarks of the reference stack: figures, not pass/fail (these machines are noisy).

    python benchmarks/bench_stack.py [--quick]

Prints medians for: delivered lines/s end to end (1 and 8 children, 100-byte lines,
aggregation off, and 2 children with 41-byte lines, the original runtime's own
benchmark), flush-barrier latency for 1, 8 and 64 children, and spawn-to-stopped time
for 8 children. The original runtime, measured on this kind of 2-core machine, delivered
about 133,000 lines/s from 2 children, took about 1 s per barrier and about 2 s to stop.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fake_procs import Script, script
from pytest_meshlog.stack import ChildSpec, LoggingMeshClient, StackConfig

CONFIG = StackConfig(enable_log_forwarding=True, env="local")


def _children(s: Script, n: int, workdir: Path) -> list[ChildSpec]:
    path = workdir / "script.json"
    s.write(path)
    return [ChildSpec(Script.child_argv(path)) for _ in range(n)]


def _discard(target: int, data: bytes) -> None:
    """A client that prints nowhere: we measure the stack, not the terminal."""


def throughput(children: int, lines: int, line_bytes: int) -> float:
    """Lines per second from the first write to the last line recorded by the client."""
    with tempfile.TemporaryDirectory() as tmp:
        specs = _children(
            script(1, flavour="ascii").flood(lines, line_bytes - 1), children, Path(tmp)
        )
        with LoggingMeshClient(CONFIG, workdir=Path(tmp) / "m", sink=_discard) as mesh:
            t0 = time.perf_counter()
            mesh.spawn(specs)
            mesh.wait_children(120)
            t1 = time.perf_counter()
            mesh.stop(60)
            got = sum(len(v) for v in mesh.delivered.values())
            assert got == children * lines, f"delivered {got} of {children * lines}"
            return got / (t1 - t0)


def barrier_latency(children: int, rounds: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        specs = _children(script(1).line().hang(), children, Path(tmp))
        with LoggingMeshClient(CONFIG, workdir=Path(tmp) / "m", sink=_discard) as mesh:
            mesh.spawn(specs, timeout=120)
            samples = []
            for _ in range(rounds):
                result = mesh.flush(30)
                assert result.completed, result
                samples.append(result.latency_s)
            mesh.stop(60)
            return statistics.median(samples)


def spawn_to_stopped(children: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        specs = _children(script(1).line().partial("tail"), children, Path(tmp))
        t0 = time.perf_counter()
        with LoggingMeshClient(CONFIG, workdir=Path(tmp) / "m", sink=_discard) as mesh:
            mesh.spawn(specs)
            mesh.stop(60)
        return time.perf_counter() - t0


def median_of(fn: Callable[[], float], repeat: int) -> tuple[float, list[float]]:
    samples = [fn() for _ in range(repeat)]
    return statistics.median(samples), samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    repeat = 3 if args.quick else 5
    rows: list[tuple[str, str, str]] = []

    def add(name: str, fn: Callable[[], float], fmt: Callable[[float], str]) -> None:
        med, samples = median_of(fn, repeat)
        rows.append((name, fmt(med), ", ".join(fmt(s) for s in samples)))
        print(f"{name:48} {fmt(med):>14}", file=sys.stderr)

    lines_fmt = lambda v: f"{v:,.0f}/s"  # noqa: E731
    ms_fmt = lambda v: f"{v * 1000:.2f} ms"  # noqa: E731
    add("lines/s, 1 child, 100-byte lines", lambda: throughput(1, 200_000, 100), lines_fmt)
    add("lines/s, 8 children, 100-byte lines", lambda: throughput(8, 50_000, 100), lines_fmt)
    add("lines/s, 2 children, 41-byte lines", lambda: throughput(2, 200_000, 41), lines_fmt)
    add("barrier latency, 1 child", lambda: barrier_latency(1, 30), ms_fmt)
    add("barrier latency, 8 children", lambda: barrier_latency(8, 30), ms_fmt)
    add("barrier latency, 64 children", lambda: barrier_latency(64, 10), ms_fmt)
    add("spawn to stopped, 8 children", lambda: spawn_to_stopped(8), ms_fmt)
    print(f"\n| figure | median of {repeat} | samples |\n|---|---|---|")
    for name, med, samples in rows:
        print(f"| {name} | {med} | {samples} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
