"""Before and after, in one sitting: one figure measured alternately on two source trees.

    python benchmarks/bench_ab.py BEFORE AFTER FIGURE [--children N] [--repeat N]

BEFORE and AFTER are checkouts of this repository (e.g. `git worktree add /tmp/before
<commit>`). FIGURE is one of `lines` (bench_cost.py's stack run: lines/s and the CPU per
million lines of each component), `lines-files` (the same with per-proc files), `barrier`, `stop`, `spawn-warm` or `spawn-cold` (as in
bench_scaling.py). Every run is a fresh interpreter with PYTHONPATH set to its tree, so
the driver, its hosts and their children all run that tree's stack, while the measuring
code is this checkout's. The runs alternate, so both trees meet the same machine: on a
shared machine the same figure moves by a third between sittings, and only a ratio from
one sitting says what a change did. Prints every run, the medians and after / before.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIGURES = ("lines", "lines-files", "barrier", "stop", "spawn-warm", "spawn-cold")


def measure(figure: str, children: int) -> dict[str, float]:
    """One run of `figure` in this interpreter (the `--one` mode)."""
    sys.path.insert(0, str(HERE))
    if figure in ("lines", "lines-files"):
        import bench_cost

        files = figure == "lines-files"
        run = bench_cost.stack_run("ascii", children, 1_000_000 // children, files=files)
        return {"lines/s": run.lines_per_s, **{f"{k} s/M": v for k, v in run.cpu.items()}}
    import bench_scaling
    import bench_stack

    if figure == "barrier":
        return {"ms": bench_scaling.barrier_wall(children, rounds=50) * 1e3}
    if figure == "stop":
        return {"ms": bench_stack.stop_alone(children) * 1e3}
    warm = figure == "spawn-warm"
    return {"ms": bench_stack.spawn_to_first_lines(children, warm=warm) * 1e3}


def run_in(tree: Path, figure: str, children: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [sys.executable, __file__, "--one", figure, "--children", str(children)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{figure} on {tree} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.splitlines()[-1])
    package = Path(result.pop("package")).resolve()
    if not package.is_relative_to(tree.resolve()):
        raise RuntimeError(f"{tree} did not shadow the installed stack: it ran {package}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path, nargs="?")
    parser.add_argument("after", type=Path, nargs="?")
    parser.add_argument("figure", choices=FIGURES)
    parser.add_argument("--children", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        import pytest_meshlog

        result = measure(args.figure, args.children)
        print(json.dumps({"package": pytest_meshlog.__file__, **result}))
        return 0
    if args.before is None or args.after is None:
        parser.error("BEFORE and AFTER trees are needed")
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for i in range(args.repeat):
        for name, tree in (("before", args.before), ("after", args.after)):
            try:
                result = run_in(tree, args.figure, args.children)
            except RuntimeError as exc:
                print(f"bench_ab.py: {exc}", file=sys.stderr)
                return 2
            runs[name].append(result)
            print(f"{i + 1:3} {name:6} " + "  ".join(f"{k} {v:.4g}" for k, v in result.items()))
    print(f"\n{args.figure}, {args.children} children, medians of {args.repeat} alternating runs")
    for key in runs["before"][0]:
        b = statistics.median(r[key] for r in runs["before"])
        a = statistics.median(r[key] for r in runs["after"])
        print(f"{key:16} before {b:12.4g}  after {a:12.4g}  after/before {a / b:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
