"""The cost of a line: the stack against the bare relay, per component, per content kind.

    python benchmarks/bench_cost.py [--repeat N] [--lines N] [--children N] [--batch-lines N]

Each run floods `lines` 41-byte lines from each of 2 children through one mesh, with the
client printing into a pipe that a separate process reads and counts (the same kind of
sink Monarch's benchmark reads; see pipe_sink.py). Stack and bare relay runs alternate,
so their ratio comes from one sitting. Per run: delivered lines/s (from the release of
the flood until the client holds every line) and CPU seconds per million delivered lines
of each component (cpu_accounting.py), taken between the release and the last line, so
start-up and teardown are not in it. Prints medians. `--batch-lines` sets the stack's
HYPERACTOR_READ_LOG_BUFFER (100 by default): every hop pays per batch, so this is the
stack's main cost knob. The "floor" rows are the bare relay doing the spec's work per line
with the same batches, without the stack's machinery (see bare_relay.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bare_relay
from cpu_accounting import COMPONENTS, Parts, per_million, sample
from pipe_sink import PipeSink

from fake_procs import Script, script
from fake_procs.content import Flavour
from pytest_meshlog.stack import ChildSpec, LoggingMeshClient, StackConfig

CONFIG = StackConfig(enable_log_forwarding=True, env="local")
LINE_BYTES = 41


@dataclass(frozen=True)
class Run:
    lines_per_s: float
    cpu: dict[str, float]  # seconds per million delivered lines


def _flood(flavour: Flavour, lines: int) -> Script:
    """A ready line, a barrier (the release), the flood, then idle until stopped."""
    return script(1, flavour=flavour).line("ready").barrier(120).flood(lines, LINE_BYTES - 1).hang()


def _wait(count: Callable[[], int], want: int, what: str, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while count() < want:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {count()} of {want} lines after {seconds} s")
        time.sleep(0.002)


def _release(release: Callable[[], object], count: Callable[[], int]) -> None:
    """Release the children's barrier until the flood has begun: a child that has written
    its ready line may not be waiting yet, and a barrier wait takes only a later ack."""
    deadline = time.monotonic() + 60
    while count() == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("the flood did not begin within 60 s of the release")
        release()
        wait = time.monotonic() + 0.2
        while count() == 0 and time.monotonic() < wait:
            time.sleep(0.001)


def _measure(
    parts: Parts, release: Callable[[], object], count: Callable[[], int], want: int
) -> Run:
    before = sample(parts)
    t0 = time.perf_counter()
    _release(release, count)
    _wait(count, want, "flood")
    elapsed = time.perf_counter() - t0
    after = sample(parts)
    flood = want
    return Run(flood / elapsed, per_million(before, after, flood))


def stack_run(
    flavour: Flavour, children: int, lines: int, batch_lines: int = 100, files: bool = False
) -> Run:
    """The stack's run; with `files`, the hosts also write every line to per-proc files."""
    with tempfile.TemporaryDirectory() as tmp, PipeSink() as sink:
        path = Path(tmp) / "script.json"
        _flood(flavour, lines).write(path)
        specs = [ChildSpec(Script.child_argv(path)) for _ in range(children)]
        config = replace(CONFIG, read_log_buffer=batch_lines)
        if files:
            config = replace(config, env="prod", log_dir=str(Path(tmp) / "logs"))
        with LoggingMeshClient(config, workdir=Path(tmp) / "m", sink=sink.stack_sink) as mesh:
            mesh.spawn(specs, timeout=120)

            def count() -> int:
                return sum(
                    mesh.client.delivered_count(r, s)
                    for r in range(children)
                    for s in ("stdout", "stderr")
                )

            _wait(count, children, "ready lines", 60)
            hosts = [p.pid for p in psutil.Process().children() if p.pid != sink.pid]
            parts = Parts.find(hosts, sink.pid)
            run = _measure(
                parts, lambda: mesh.flush(120), lambda: count() - children, children * lines
            )
            mesh.stop(60)
            return run


def bare_run(flavour: Flavour, children: int, lines: int, batch: int = 0) -> Run:
    """The bare relay; with `batch`, plus the spec's work per line in batches of that size."""
    with tempfile.TemporaryDirectory() as tmp, PipeSink() as sink:
        path = Path(tmp) / "script.json"
        _flood(flavour, lines).write(path)
        mesh = bare_relay.start(Path(tmp), children, path, sink.raw_sink, batch)
        try:
            _wait(lambda: mesh.client.lines, children, "bare ready lines", 60)
            parts = Parts.find([mesh.host.pid], sink.pid)
            return _measure(
                parts, mesh.release, lambda: mesh.client.lines - children, children * lines
            )
        finally:
            mesh.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (default 3)")
    parser.add_argument("--lines", type=int, default=500_000, help="lines per child")
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument("--batch-lines", type=int, default=100, help="the stack's batch size")
    args = parser.parse_args()
    rows: dict[str, list[Run]] = {}
    for _ in range(args.repeat):
        for flavour in ("ascii", "mixed"):
            rows.setdefault(f"stack {flavour}", []).append(
                stack_run(flavour, args.children, args.lines, args.batch_lines)
            )
            rows.setdefault(f"bare {flavour}", []).append(
                bare_run(flavour, args.children, args.lines)
            )
            rows.setdefault(f"floor {flavour}", []).append(
                bare_run(flavour, args.children, args.lines, args.batch_lines)
            )
    cols = (*COMPONENTS, "stack")
    print(
        f"\n{args.children} children x {args.lines:,} lines of {LINE_BYTES} bytes, "
        f"batches of {args.batch_lines} lines, medians of {args.repeat}"
    )
    print(f"{'':14}{'lines/s':>11}" + "".join(f"{c:>10}" for c in cols) + "   (CPU s per M lines)")
    med: dict[str, Run] = {}
    for name, runs in rows.items():
        rate = statistics.median(r.lines_per_s for r in runs)
        cpu = {c: statistics.median(r.cpu[c] for r in runs) for c in cols}
        med[name] = Run(rate, cpu)
        print(f"{name:14}{rate / 1e6:>10.2f}M" + "".join(f"{cpu[c]:>10.3f}" for c in cols))
    for flavour in ("ascii", "mixed"):
        s = med[f"stack {flavour}"]
        for other in ("bare", "floor"):
            b = med[f"{other} {flavour}"]
            print(f"stack / {other}, {flavour}: {s.lines_per_s / b.lines_per_s:.2f}x lines/s, "
                  f"{s.cpu['stack'] / b.cpu['stack']:.2f}x own CPU per line")  # fmt: skip
    print(
        f"stack mixed / ascii: {med['stack mixed'].lines_per_s / med['stack ascii'].lines_per_s:.2f}x lines/s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
