"""Benchmarks of the reference stack: figures, not pass/fail (these machines are noisy).

    python benchmarks/bench_stack.py [--quick] [--only NAME ...]

Prints the median of N runs for each figure of issue 6, with the target beside it:

- delivered lines/s, 2 children, 41-byte lines, aggregation off (1,000,000 lines each),
  timed from the spawn() call until the client holds every line (spawn included);
- the same for 8 children with 100-byte lines;
- flush-barrier latency with 1, 8 and 64 children (the client's own measurement);
- stop() of 8 children that wrote a line and a final partial line, timed alone, with the
  teardown verified (every line and partial line delivered, every child exited 0);
- spawn() of 32 children until the client holds the first line of every one of them, on
  the warm spare host a previous mesh left (as in a pytest session) and cold;
- the driver's resident memory growth while 1,000,000 lines are in flight towards a
  slow client, recording every line, with nothing lost (counts checked);
- the wall time of the whole catalog (`pytest --meshlog -m meshlog_catalog`).

With Monarch importable (`pip install -e '.[monarch]'`), `benchmarks/bench_monarch.py`
measures the same figures on it and this script prints them side by side with the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from fake_procs import Script, script
from pytest_meshlog.stack import ChildSpec, LoggingMeshClient, StackConfig, spare

CONFIG = StackConfig(enable_log_forwarding=True, env="local")
ROOT = Path(__file__).resolve().parent.parent
_RANK = re.compile(rb"\[host\d+ proc\[(\d+)\]\]")


def _children(s: Script, n: int, workdir: Path) -> list[ChildSpec]:
    path = workdir / "script.json"
    s.write(path)
    return [ChildSpec(Script.child_argv(path)) for _ in range(n)]


def _discard(target: int, data: bytes) -> None:
    """A client that prints nowhere: we measure the stack, not the terminal."""


def _count(mesh: LoggingMeshClient, ranks: int) -> int:
    return sum(
        mesh.client.delivered_count(r, s) for r in range(ranks) for s in ("stdout", "stderr")
    )


def throughput(children: int, lines: int, line_bytes: int) -> float:
    """Lines per second from the spawn() call until the client holds every line."""
    with tempfile.TemporaryDirectory() as tmp:
        specs = _children(
            script(1, flavour="ascii").flood(lines, line_bytes - 1), children, Path(tmp)
        )
        with LoggingMeshClient(CONFIG, workdir=Path(tmp) / "m", sink=_discard) as mesh:
            t0 = time.perf_counter()
            mesh.spawn(specs, timeout=120)
            want = children * lines
            deadline = time.monotonic() + 300
            while _count(mesh, children) < want:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"delivered {_count(mesh, children)} of {want} lines")
                time.sleep(0.001)
            t1 = time.perf_counter()
            mesh.stop(60)
            return want / (t1 - t0)


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


def stop_alone(children: int) -> float:
    """stop() alone, of children idle after a line and a final partial line; verified."""
    with tempfile.TemporaryDirectory() as tmp:
        specs = _children(script(1).line("one").partial("tail").hang(), children, Path(tmp))
        with LoggingMeshClient(CONFIG, workdir=Path(tmp) / "m", sink=_discard) as mesh:
            mesh.spawn(specs, timeout=120)
            deadline = time.monotonic() + 30
            while _count(mesh, children) < children:  # every first line is in: all running
                if time.monotonic() > deadline:
                    raise TimeoutError("first lines did not arrive")
                time.sleep(0.001)
            t0 = time.perf_counter()
            outcome = mesh.stop(60)
            elapsed = time.perf_counter() - t0
            for rank in range(children):
                got = mesh.delivered.get((rank, "stdout"), [])
                assert got == [f"[{rank}] one".encode(), f"[{rank}] tail".encode()], got
            assert all(e.code == 0 for e in mesh.exits.values()), mesh.exits
            assert outcome is not None
            return elapsed


def spawn_to_first_lines(children: int, warm: bool = True) -> float:
    """From the spawn() call until the client holds the first line of every child. `warm`:
    on the spare host the previous mesh left (as every mesh of a pytest session but the
    first); else on a host interpreter started for it."""
    if warm and not spare.reserved()[0]:
        _first_lines(1, spare_host=True)  # leaves the spare this run takes
    if warm and not spare.wait_ready():  # warm, as it is after a test's evidence and report
        raise TimeoutError("the spare host did not warm up in time")
    return _first_lines(children, spare_host=warm)


def _first_lines(children: int, spare_host: bool) -> float:
    seen: set[int] = set()
    done = threading.Event()
    t_done: list[float] = []

    def sink(target: int, data: bytes) -> None:
        seen.update(int(m) for m in _RANK.findall(data))
        if len(seen) == children and not done.is_set():
            t_done.append(time.perf_counter())
            done.set()

    with tempfile.TemporaryDirectory() as tmp:
        specs = _children(script(1).line("hello"), children, Path(tmp))
        with LoggingMeshClient(
            StackConfig(enable_log_forwarding=True),
            workdir=Path(tmp) / "m",
            sink=sink,
            spare_host=spare_host,
        ) as mesh:
            t0 = time.perf_counter()
            mesh.spawn(specs, timeout=120)
            if not done.wait(60):
                missing = sorted(set(range(children)) - seen)
                raise TimeoutError(f"first lines of ranks {missing} did not arrive in 60 s")
            mesh.stop(60)
            return t_done[0] - t0


def memory_in_flight(lines: int, batch_delay: float) -> float:
    """Peak growth of the driver's RSS (MiB) while `lines` lines flow to a client that
    spends `batch_delay` s per batch; every line must arrive (backpressure, no loss).
    Measured in a fresh process: memory freed by an earlier run would hide the growth."""
    proc = subprocess.run(
        [sys.executable, __file__, "--memory-run", str(lines), str(batch_delay)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"the memory run failed:\n{proc.stderr[-3000:]}")
    return float(proc.stdout.split()[-1])


def _memory_run(lines: int, batch_delay: float) -> float:
    me = psutil.Process()
    peak = [me.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            time.sleep(0.005)

    with tempfile.TemporaryDirectory() as tmp:
        specs = _children(script(1, flavour="ascii").flood(lines // 2, 40), 2, Path(tmp))
        base = me.memory_info().rss
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with LoggingMeshClient(
            CONFIG, workdir=Path(tmp) / "m", sink=_discard, consume_delay=batch_delay
        ) as mesh:
            mesh.spawn(specs, timeout=120)
            mesh.wait_children(600)
            mesh.stop(60)
            got = _count(mesh, 2)
        stop.set()
        sampler.join()
        assert got == lines, f"delivered {got} of {lines}"
        return (peak[0] - base) / 2**20


def catalog_wall() -> float:
    """The whole catalog, as the README's main job runs it (one process)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--meshlog", "-m", "meshlog_catalog", "-q",
         "-p", "no:cacheprovider", "-p", "no:benchmark"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"the catalog failed:\n{proc.stdout[-3000:]}")
    return elapsed


@dataclass(frozen=True)
class Figure:
    name: str
    target: str
    run: Callable[[], float]
    fmt: str  # "rate" | "ms" | "mib" | "s"
    higher_is_better: bool = False


def fmt(kind: str, v: float) -> str:
    return {
        "rate": f"{v:,.0f}/s",
        "ms": f"{v * 1000:.1f} ms",
        "mib": f"{v:.1f} MiB",
        "s": f"{v:.1f} s",
    }[kind]


FIGURES = [
    Figure("lines/s, 2 children, 41-byte lines", ">= 1,000,000/s",
           lambda: throughput(2, 1_000_000, 41), "rate", True),
    Figure("lines/s, 8 children, 100-byte lines", "-",
           lambda: throughput(8, 250_000, 100), "rate", True),
    Figure("barrier latency, 1 child", "-", lambda: barrier_latency(1, 30), "ms"),
    Figure("barrier latency, 8 children", "<= 5 ms", lambda: barrier_latency(8, 30), "ms"),
    Figure("barrier latency, 64 children", "<= 20 ms", lambda: barrier_latency(64, 10), "ms"),
    Figure("stop(), 8 children, verified", "<= 150 ms", lambda: stop_alone(8), "ms"),
    Figure("spawn -> first line of all 32 children", "<= 300 ms",
           lambda: spawn_to_first_lines(32), "ms"),
    Figure("the same, cold (host interpreter started for it)", "-",
           lambda: spawn_to_first_lines(32, warm=False), "ms"),
    Figure("driver memory, 1,000,000 lines in flight", "<= +64 MiB",
           lambda: memory_in_flight(1_000_000, 0.0005), "mib"),
    Figure("whole catalog (one process)", "<= 30 s", catalog_wall, "s"),
]  # fmt: skip


def monarch_figures(names: list[str], repeat: int) -> dict[str, float]:
    """The same figures measured on Monarch, when it is installed (else nothing)."""
    try:
        import monarch  # noqa: F401
    except ImportError:
        return {}
    script_path = Path(__file__).with_name("bench_monarch.py")
    proc = subprocess.run(
        [sys.executable, str(script_path), "--json", "--repeat", str(repeat), *names],
        capture_output=True, text=True, timeout=1800, cwd=ROOT,
    )  # fmt: skip
    if proc.returncode != 0:
        print(f"bench_monarch.py failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return {}
    return {k: float(v) for k, v in json.loads(proc.stdout.splitlines()[-1]).items()}


def main() -> int:
    if sys.argv[1:2] == ["--memory-run"]:  # memory_in_flight's fresh process
        print(_memory_run(int(sys.argv[2]), float(sys.argv[3])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 runs per figure, not 5")
    parser.add_argument("--only", nargs="*", default=None, help="substrings of figure names")
    args = parser.parse_args()
    repeat = 3 if args.quick else 5
    chosen = [f for f in FIGURES if not args.only or any(o in f.name for o in args.only)]
    ours: dict[str, tuple[float, list[float]]] = {}
    for fig in chosen:
        runs = 1 if fig.fmt == "s" and args.quick else repeat
        samples = [fig.run() for _ in range(runs)]
        ours[fig.name] = (statistics.median(samples), samples)
        print(f"{fig.name:44} {fmt(fig.fmt, ours[fig.name][0]):>14}", file=sys.stderr)
    theirs = monarch_figures([f.name for f in chosen], repeat)
    cpu = f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB"
    print(f"\nmedians of {repeat} runs ({cpu}; catalog: {1 if args.quick else repeat})\n")
    head = "| figure | target | reference stack | samples |"
    if theirs:
        head += " Monarch 0.7.0 | times better than Monarch |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for fig in chosen:
        med, samples = ours[fig.name]
        row = f"| {fig.name} | {fig.target} | {fmt(fig.fmt, med)} | "
        row += ", ".join(fmt(fig.fmt, s) for s in samples) + " |"
        if theirs:
            other = theirs.get(fig.name)
            if other is None:
                row += " n/a | |"
            else:
                ratio = med / other if fig.higher_is_better else other / med
                row += f" {fmt(fig.fmt, other)} | {ratio:.2f}x |"
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
