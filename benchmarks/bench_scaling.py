"""How the stack scales with the number of children on one host: 1 to 256.

    python benchmarks/bench_scaling.py [--children 1 4 16 64 256] [--repeat N]

Per row (medians of N): delivered lines/s and the stack's own CPU per million lines with
the same total of 41-byte lines spread over the children (bench_cost.py's run, pipe sink);
the flush barrier as the caller sees it (wall time of `flush()`, the way bench_monarch.py
times Monarch's); `stop()` of idle children after a line and a partial line, verified;
spawn to the first line of every child, cold (a host started for the mesh) and warm (the
spare host a previous mesh left, as in a pytest session).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cost import stack_run
from bench_stack import CONFIG, _children, spawn_to_first_lines, stop_alone

from fake_procs import script
from pytest_meshlog.stack import LoggingMeshClient

TOTAL_LINES = 1_000_000


def barrier_wall(children: int, rounds: int = 20) -> float:
    """Median wall time of `flush()` as its caller sees it, children idle."""
    with tempfile.TemporaryDirectory() as tmp:
        specs = _children(script(1).line().hang(), children, Path(tmp))
        with LoggingMeshClient(CONFIG, workdir=Path(tmp) / "m", sink=lambda t, d: None) as mesh:
            mesh.spawn(specs, timeout=300)
            samples = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                result = mesh.flush(60)
                samples.append(time.perf_counter() - t0)
                if not result.completed:
                    raise RuntimeError(f"barrier with {children} children: {result}")
            mesh.stop(120)
            return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--children", type=int, nargs="*", default=[1, 4, 16, 64, 256])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    head = ("children", "lines/s", "CPU s/M", "barrier", "stop()", "spawn cold", "spawn warm")
    print(f"{TOTAL_LINES:,} lines of 41 bytes in all; medians of {args.repeat}")
    print("".join(f"{h:>12}" for h in head))
    for n in args.children:
        runs = [stack_run("ascii", n, TOTAL_LINES // n) for _ in range(args.repeat)]
        row = [
            f"{statistics.median(r.lines_per_s for r in runs) / 1e6:.2f}M",
            f"{statistics.median(r.cpu['stack'] for r in runs):.3f}",
            f"{statistics.median(barrier_wall(n) for _ in range(args.repeat)) * 1e3:.2f} ms",
            f"{statistics.median(stop_alone(n) for _ in range(args.repeat)) * 1e3:.1f} ms",
            f"{statistics.median(spawn_to_first_lines(n, warm=False) for _ in range(args.repeat)) * 1e3:.0f} ms",
            f"{statistics.median(spawn_to_first_lines(n, warm=True) for _ in range(args.repeat)) * 1e3:.0f} ms",
        ]
        print(f"{n:>12}" + "".join(f"{c:>12}" for c in row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
