"""Child start-up cost: time from spawn() to the first line delivered to the client.

    python benchmarks/bench_spawn.py [--repeat N]

For 1 and 32 fake children (each writes one line at once), prints the median time from
the spawn call until the client has the first line of every child, and the import time
of the child program alone (`python -X importtime -m fake_procs`).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from fake_procs import Script, script
from pytest_meshlog.stack import ChildSpec, LoggingMeshClient, StackConfig

_RANK = re.compile(rb"\[host\d+ proc\[(\d+)\]\]")


def first_lines(children: int) -> float:
    seen: set[int] = set()
    done = threading.Event()
    t_done: list[float] = []

    def sink(target: int, data: bytes) -> None:
        seen.update(int(m) for m in _RANK.findall(data))
        if len(seen) == children and not done.is_set():
            t_done.append(time.perf_counter())
            done.set()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.json"
        script(1).line("hello").write(path)
        specs = [ChildSpec(Script.child_argv(path)) for _ in range(children)]
        config = StackConfig(enable_log_forwarding=True)
        with LoggingMeshClient(config, workdir=Path(tmp) / "m", sink=sink) as mesh:
            t0 = time.perf_counter()
            mesh.spawn(specs, timeout=120)
            if not done.wait(60):
                raise TimeoutError(
                    f"first lines of ranks {sorted(set(range(children)) - seen)} never arrived"
                )
            mesh.stop(60)
            return t_done[0] - t0


def child_import_ms() -> float:
    """Import time of the child program's modules, from -X importtime (no script run)."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import fake_procs.__main__, pytest_meshlog.stack.child"],
        capture_output=True, text=True, check=True,
    ).stderr  # fmt: skip
    total = 0
    for line in out.splitlines():
        parts = line.split("|")
        top_level = len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  ")
        if top_level:
            total += int(parts[1])  # cumulative time of top-level imports, in microseconds
    return total / 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for n in (1, 32):
        samples = [first_lines(n) for _ in range(args.repeat)]
        print(f"spawn -> first line of all {n:2} children: median {statistics.median(samples) * 1000:7.1f} ms "
              f"(samples: {', '.join(f'{s * 1000:.0f}' for s in samples)})")  # fmt: skip
    print(f"child program imports: {child_import_ms():.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
