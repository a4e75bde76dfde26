"""bench_stack's figures measured under torchrun (torch.distributed.run), where they apply.

    python benchmarks/bench_torchrun.py [--json] [--repeat N] [NAME ...]

NAME: figure names as in bench_stack.FIGURES (or substrings); none: all that apply. With
--json the last line of stdout is {figure name: median} in bench_stack's units.

Every run is one `torchrun --standalone --nproc-per-node=N --max-restarts=0 --tee=3
--log-dir=D -m pytest_meshlog.torchrun.rank ...`, exactly the launch the torchrun backend
makes, whose ranks run the same fake_procs scripts as the reference children. Its stdout
(the console: `[default<r>]:` lines) is a pipe read here; its stderr is a file. Times are
this process's CLOCK_MONOTONIC, from just before the launcher's Popen: torchrun imports
torch and starts its rendezvous store first, and that is part of every torchrun job.

- lines/s: from the Popen until all N x lines console lines (newlines on its stdout)
  were read;
- stop(): ranks idle after a line and a final partial line; SIGTERM to the launcher (what
  a user's or a scheduler's stop is) until it exited, then every rank's line is checked
  on the console and the partial lines counted (reported, not required);
- spawn -> first line of all 32: until a console line of every rank was read (always
  cold: there is no warm torchrun to reuse).

Not applicable: barrier latency (torchrun has no flush), driver memory (the console is a
terminal, nothing is recorded) and the warm spawn. Every wait has a deadline naming what
it waited for; the launcher's session and every rank are killed whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
LABEL = re.compile(rb"\[default(\d+)\]:")


class Launch:
    """One torchrun launch of `procs` ranks, all running `script`; its console is read
    with `wait`."""

    def __init__(self, procs: int, script: Any, keep: bool = True) -> None:
        self.keep = keep  # keep the console's bytes (not for the floods: only count them)
        self.tmp = tempfile.TemporaryDirectory(prefix="bench-trun-")
        work = Path(self.tmp.name)
        dirs = [work / d for d in ("scripts", "records", "pids", "logs")]
        for d in dirs:
            d.mkdir()
        for rank in range(procs):
            script.write(dirs[0] / f"rank{rank}.json")
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={procs}", "--max-restarts=0", "--tee=3",
                f"--log-dir={dirs[3]}", "-m", "pytest_meshlog.torchrun.rank",
                *map(str, dirs[:3])]  # fmt: skip
        self.err = open(work / "stderr", "wb")  # noqa: SIM115 - closed in close()
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self.err, cwd=ROOT, start_new_session=True
        )
        self.output = bytearray()
        self.lines = 0  # newlines read so far
        self.tree: set[psutil.Process] = set()

    def wait(self, what: str, done: Callable[[Launch], bool], deadline_s: float) -> float:
        """Read the console until `done(self)`; the time it took from the Popen."""
        assert self.proc.stdout is not None
        end = time.monotonic() + deadline_s
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while not done(self):
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"torchrun: no {what} after {deadline_s:.0f}s")
                with contextlib.suppress(psutil.Error):
                    self.tree.update(psutil.Process(self.proc.pid).children(recursive=True))
                if sel.select(min(left, 0.5)):
                    chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
                    if not chunk:
                        raise RuntimeError(f"torchrun closed its console before {what}")
                    if self.keep:
                        self.output += chunk
                    self.lines += chunk.count(b"\n")
        return time.monotonic() - self.t0

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for p in self.tree:
            with contextlib.suppress(psutil.Error):
                p.kill()
        self.proc.wait(10)
        psutil.wait_procs(list(self.tree), timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.err.close()
        self.tmp.cleanup()


def _script(**kw: Any) -> Any:
    from fake_procs import script

    return script(1, **kw)


def throughput(procs: int, lines: int, line_bytes: int) -> float:
    want = procs * lines
    run = Launch(procs, _script(flavour="ascii").flood(lines, line_bytes - 1), keep=False)
    try:
        took = run.wait(f"{want:,} console lines", lambda run: run.lines >= want, 600)
        run.proc.wait(60)
        return want / took
    finally:
        run.close()


def stop_alone(procs: int) -> float:
    run = Launch(procs, _script().line("one").partial("tail").hang())
    try:
        run.wait(f"a line of each of {procs} ranks", lambda run: run.lines >= procs, 120)
        time.sleep(0.3)  # the tailer's 0.1 s poll: the partial lines are in the files
        start = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        run.proc.wait(60)
        elapsed = time.monotonic() - start
        with contextlib.suppress(TimeoutError, RuntimeError):
            run.wait("the console's end", lambda run: False, 5)
        text = bytes(run.output)
        for rank in range(procs):
            assert f"[default{rank}]:one\n".encode() in text, text[:400]
        tails = sum(f"[default{r}]:tail".encode() in text for r in range(procs))
        print(f"stop(): every rank's line reached the console; {tails}/{procs} final partial "
              "lines did", file=sys.stderr)  # fmt: skip
        return elapsed
    finally:
        run.close()


def spawn_to_first_lines(procs: int) -> float:
    run = Launch(procs, _script().line("hello"))
    try:
        ranks = lambda run: len(set(LABEL.findall(run.output))) >= procs  # noqa: E731
        took = run.wait(f"a line of each of {procs} ranks", ranks, 300)
        run.proc.wait(60)
        return took
    finally:
        run.close()


@dataclass(frozen=True)
class Figure:
    name: str  # exactly bench_stack's Figure.name
    run: Callable[[], float]
    fmt: str


FIGURES = [
    Figure("lines/s, 2 children, 41-byte lines", lambda: throughput(2, 1_000_000, 41), "rate"),
    Figure("lines/s, 8 children, 100-byte lines", lambda: throughput(8, 250_000, 100), "rate"),
    Figure("stop(), 8 children, verified", lambda: stop_alone(8), "ms"),
    Figure("the same, cold (host interpreter started for it)",
           lambda: spawn_to_first_lines(32), "ms"),
]  # fmt: skip


def fmt(kind: str, v: float) -> str:
    return f"{v:,.0f}/s" if kind == "rate" else f"{v * 1000:.1f} ms"


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the launches' cleanup runs
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("names", nargs="*", help="figure names (or substrings); none: all")
    parser.add_argument("--json", action="store_true", help="last stdout line: {name: median}")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (default 3)")
    args = parser.parse_args(argv)
    chosen = [f for f in FIGURES if not args.names or any(n in f.name for n in args.names)]
    medians: dict[str, float] = {}
    for fig in chosen:
        samples = [fig.run() for _ in range(args.repeat)]
        medians[fig.name] = statistics.median(samples)
        shown = ", ".join(fmt(fig.fmt, s) for s in samples)
        print(f"{fig.name:48} {fmt(fig.fmt, medians[fig.name]):>14}   ({shown})", file=sys.stderr)
    if args.json:
        print(json.dumps(medians))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
