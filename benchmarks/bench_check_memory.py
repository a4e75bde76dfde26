"""The driver's memory for checking a big result: figures, not pass/fail (issue 11, finding 8).

    python benchmarks/bench_check_memory.py [--lines N] [--runs 3] [--profile]

Each run is a fresh interpreter (`--one`) that starts one mesh through the harness on the
reference stack: 2 children, each flooding N lines (2,500,000 by default) of 40 bytes on
stdout, env="prod" so the per-host files are written too. A sampler thread reads the
driver's RSS every 10 ms and the run prints two figures:

- flow: peak RSS growth from before spawn() until every child finished and every line is
  in the client's record (what the client holds);
- check: peak RSS growth during `Mesh.stop()` (stop, evidence, oracle) above the RSS at its
  start, i.e. what checking adds on top of what the client already holds.

The parent prints the median of the runs. `--profile` runs one more mesh with tracemalloc
tracing the check phase alone and prints its top allocation sites (tracing slows it down a
lot: that run's RSS figures are not comparable and are not printed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from fake_procs import script
from pytest_meshlog.backend import ReferenceBackend
from pytest_meshlog.harness import MeshHarness
from pytest_meshlog.markers import Expectation, MeshOptions

MB = 1024 * 1024
CHILDREN = 2
LINE_BYTES = 40  # without the newline


class Peak:
    """Samples this process's RSS every `every` seconds; `mark()` starts a new phase."""

    def __init__(self, every: float = 0.01) -> None:
        self._proc = psutil.Process()
        self._every = every
        self._stop = threading.Event()
        self.start = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def mark(self) -> tuple[int, int]:
        """(start, peak) of the phase that ends now; a new phase starts at the current RSS."""
        now = self._proc.memory_info().rss
        phase = (self.start, max(self.peak, now))
        self.start = self.peak = now
        return phase

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


PHASES: dict[str, tuple[int, int]] = {}
"""Per watched step of the check: (peak traced growth during it, traced growth after it)."""


def _watched(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        try:
            return fn(*args, **kwargs)
        finally:
            after, peak = tracemalloc.get_traced_memory()
            grew, held = PHASES.get(name, (0, 0))
            PHASES[name] = (max(grew, peak - before), held + after - before)

    return run


def watch_phases() -> None:
    """Wrap the check's steps so the profile says which of them allocates what. Nested
    steps reset the peak of their caller: a caller's figure is a lower bound."""
    from pytest_meshlog import evidence, harness, oracle

    targets: list[tuple[Any, str]] = [
        (evidence, "gather"),
        (evidence, "emitted"),
        (evidence, "framed"),
        (evidence, "file_lines"),
        (evidence, "_delivered"),
        (harness, "evaluate"),
        (oracle, "match_lines"),
    ]
    for module, attr in targets:
        if hasattr(module, attr):
            setattr(module, attr, _watched(f"{module.__name__}.{attr}", getattr(module, attr)))


def one_run(lines: int, profile: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        harness = MeshHarness(
            backend=ReferenceBackend(),
            options=MeshOptions(env="prod"),
            faults=(),
            expect=Expectation(),
            seed=1,
            procs=CHILDREN,
            timeout=600,
            tmp_path=Path(tmp),
        )
        flood = script(1, flavour="ascii").flood(lines, LINE_BYTES)
        peak = Peak()
        t0 = time.perf_counter()
        mesh = harness.spawn(flood)
        mesh.wait_scripts(600)
        client = mesh._client.client  # type: ignore[attr-defined]  # the reference client
        want = CHILDREN * lines
        deadline = time.monotonic() + 600
        while sum(client.delivered_count(r, "stdout") for r in range(CHILDREN)) < want:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the client did not get all {want} lines within 600 s")
            time.sleep(0.01)
        t1 = time.perf_counter()
        flow_start, flow_peak = peak.mark()
        if profile:
            tracemalloc.start(1)
            watch_phases()
        report = mesh.stop()
        t2 = time.perf_counter()
        check_start, check_peak = peak.mark()
        peak.close()
        if profile:
            snapshot = tracemalloc.take_snapshot()
            traced, traced_peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(f"tracemalloc: peak {traced_peak / MB:.0f} MB, held after {traced / MB:.0f} MB")
            for name, (grew, held) in PHASES.items():
                print(f"  {name:<40} peak +{grew / MB:7.1f} MB, held after +{held / MB:7.1f} MB")
            print("top allocation sites still held after stop() (by line):")
            for stat in snapshot.statistics("lineno")[:15]:
                print(f"  {stat.size / MB:8.1f} MB {stat.count:>9} blocks  {stat.traceback[0]}")
        problems = report.problems()
        counts = report.summary()
        if problems or counts["lines_delivered"] != want or counts["lines_in_files"] != want:
            raise AssertionError(f"the mesh was not clean: {counts} {problems[:2]}")
        return {
            "flow_mb": (flow_peak - flow_start) / MB,
            "check_mb": (check_peak - check_start) / MB,
            "flow_s": t1 - t0,
            "check_s": t2 - t1,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--lines", type=int, default=2_500_000, help="lines per child")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="one tracemalloc run as well")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.lines, args.profile)))
        return
    here = str(Path(__file__).resolve())
    samples = []
    for i in range(args.runs):
        out = subprocess.run(
            [sys.executable, here, "--one", "--lines", str(args.lines)],
            check=True,
            capture_output=True,
            text=True,
            timeout=1800,
        ).stdout
        samples.append(json.loads(out.strip().splitlines()[-1]))
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in samples[-1].items()))
    total = CHILDREN * args.lines
    print(f"{CHILDREN} children x {args.lines} lines of {LINE_BYTES + 1} bytes ({total} lines)")
    for key, label in (
        ("flow_mb", "driver RSS growth while lines flow (client record), MB"),
        ("check_mb", "driver RSS growth during stop() + evidence + oracle, MB"),
        ("flow_s", "time until the client holds every line, s"),
        ("check_s", "time of stop() + evidence + oracle, s"),
    ):
        print(f"  median {statistics.median(s[key] for s in samples):8.1f}  {label}")
    if args.profile:
        subprocess.run(
            [sys.executable, here, "--one", "--profile", "--lines", str(args.lines)],
            check=True,
            timeout=3600,
        )


if __name__ == "__main__":
    main()
