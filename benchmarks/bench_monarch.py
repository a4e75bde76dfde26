"""bench_stack's figures measured on Monarch 0.7.0, where a faithful equivalent exists.

    python benchmarks/bench_monarch.py [--json] [--repeat N] [NAME ...]

NAME: figure names as in bench_stack.FIGURES (or substrings of them); none: all of them.
With --json the last line of stdout is {figure name: median}, in bench_stack's units
(lines/s; seconds; MiB); figures without a Monarch equivalent are left out (bench_stack
prints n/a). Without --json a table is printed.

Every run starts a fresh driver: this file with `--driver`, in a session of its own, which
imports Monarch *before* any timer starts, then calls `this_host().spawn_procs()`,
`logging_option(stream_to_client=True, aggregate_window_sec=None)` and spawns the same
`ScriptActor` the Monarch backend uses (pytest_meshlog/monarch/proc_actor.py), which runs
the same fake_procs script as the reference child (same bytes, same os.write calls, same
progress record). The driver's stdout is the terminal, read here: only Monarch's client
lines (`[<host> bench-<rank><...>@...] <line>`) are counted, not the local host's console
tee of the raw bytes. Start times come from the driver (`time.monotonic()` just before
`spawn_procs`), end times from this process when it reads the last awaited client line:
both are CLOCK_MONOTONIC, one clock for the whole machine. Every wait has a deadline; a
timeout says what was awaited, and the driver's process group and every process below it
are killed whatever happens.

What is measured, per figure (the reference's definitions, bench_stack.py):

- lines/s: from `spawn_procs` (spawn, logging_option, actor spawn and start included, as
  the reference's spawn() is) until all N x lines client lines have been read;
- barrier latency: Monarch's flush (`_logging_manager._new_flush_handle().get()`, the
  barrier `ProcMesh.stop()` runs; 0.7.0 has no public flush) timed in the driver, with
  idle procs whose one line already reached the client; median of the rounds;
- stop(): `procs.stop().get()` alone (it runs that flush first), timed in the driver,
  after each proc wrote a line and a final partial line; what reached the client is
  checked and reported on stderr (on 0.7.0 the partial lines are known not to arrive, so
  that is a note, not a failure; exit codes are not checked: stop kills the procs);
- spawn -> first line of all 32: until a client line of every rank was read. "Warm": the
  driver first spawned and stopped a 1-proc mesh (its host is up, as a pytest session's
  later meshes find it); "cold": the driver's first spawn (imports excluded).

Not measured (no faithful equivalent): the driver's memory with a slow client (Monarch's
client prints to a terminal, it records nothing) and the whole catalog (~200 s on Monarch;
run `pytest --meshlog --meshlog-stack=monarch` for it).
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
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from pytest_meshlog.foreign.helper_link import spawn_with_reply_pipe

ROOT = Path(__file__).resolve().parent.parent
MESH = "bench"
MARKER = b" " + MESH.encode() + b"-"
"""Once per client line: after the hostname in `[<host> bench-<rank><...>@bench-...] `."""
PREFIX = re.compile(rb"\[[^\s\]]+ " + re.escape(MESH.encode()) + rb"-(\d+)<[^>\s]*>@[^\s\]]*\] ")
"""Monarch's client prefix (as pytest_meshlog/monarch/output.py): group 1 is the rank."""


# -- the driver (runs in its own process, with Monarch) -----------------------------------


def driver_main(plan_path: str, reply_fd: int) -> int:
    """Spawn the mesh, answer `spawned`, then one JSON command per stdin line, each
    answered with one JSON line on `reply_fd` (fds 1 and 2 are the terminal)."""
    plan = json.loads(Path(plan_path).read_text("utf-8"))
    os.set_inheritable(reply_fd, False)  # Monarch's procs must not hold the reply pipe
    reply = os.fdopen(reply_fd, "w", buffering=1, encoding="utf-8")
    import asyncio

    from monarch.actor import this_host

    from pytest_meshlog.monarch.proc_actor import ScriptActor

    def answer(**kw: Any) -> None:
        reply.write(json.dumps({"ok": True, **kw}) + "\n")

    try:
        if plan["warm"]:  # the host is up and has run a mesh before
            warm = this_host().spawn_procs(per_host={"gpus": 1}, name="warmup")
            asyncio.run(warm.logging_option(stream_to_client=True, aggregate_window_sec=None))
            warm.stop().get(timeout=60)
            time.sleep(0.3)
        t0 = time.monotonic()
        procs = this_host().spawn_procs(per_host={"gpus": plan["procs"]}, name=MESH)
        asyncio.run(procs.logging_option(stream_to_client=True, aggregate_window_sec=None))
        actors = procs.spawn("script", ScriptActor)
        actors.prepare.call(plan["scripts_dir"], plan["record_dir"]).get(timeout=120)
        actors.run.broadcast()
        answer(t0=t0, spawned=time.monotonic())
        for raw in sys.stdin:
            cmd = json.loads(raw)
            if cmd["cmd"] == "flush":
                samples = []
                for _ in range(cmd["rounds"]):
                    start = time.monotonic()
                    procs._logging_manager._new_flush_handle().get(timeout=cmd["timeout"])
                    samples.append(time.monotonic() - start)
                answer(samples=samples)
            elif cmd["cmd"] == "stop":
                start = time.monotonic()
                procs.stop().get(timeout=cmd["timeout"])
                answer(duration_s=time.monotonic() - start)
            elif cmd["cmd"] == "exit":
                answer()
                break
    except BaseException as exc:  # told to the parent, which kills us
        reply.write(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
        return 1
    finally:
        reply.close()
    return 0


# -- the parent: one driver, its terminal, its deadlines ----------------------------------


class Run:
    """One driver process and what its stdout (the terminal) showed, read in a thread:
    the count of client lines, when `want_lines` of them were read, and (`keep`) the
    whole output or the ranks seen so far (`want_ranks`)."""

    def __init__(self, tmp: Path, procs: int, script: Any, *, warm: bool = False,
                 keep: bool = False, want_lines: int = 0, want_ranks: int = 0) -> None:  # fmt: skip
        self.tmp, self.keep = tmp, keep
        self.want_lines, self.want_ranks = want_lines, want_ranks
        self.lines = 0
        self.ranks: set[int] = set()
        self.output = bytearray()
        self.t_lines: float | None = None
        self.t_ranks: float | None = None
        self.done = threading.Event()
        self._tail = b""
        self._pending = b""
        self._descendants: set[psutil.Process] = set()
        scripts, records = tmp / "scripts", tmp / "records"
        scripts.mkdir()
        records.mkdir()
        for rank in range(procs):
            script.write(scripts / f"rank{rank}.json")
        plan = tmp / "plan.json"
        plan.write_text(json.dumps({"procs": procs, "warm": warm, "scripts_dir": str(scripts),
                                    "record_dir": str(records)}))  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MAST_", "HYPERACTOR_"))}
        env.update(
            HYPERACTOR_MESH_ENABLE_LOG_FORWARDING="true",
            HYPERACTOR_FORCE_FILE_LOG="false",  # local, no per-host files: as the reference
            TMPDIR=str(tmp),
            PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        )
        self.stderr_path = tmp / "driver.stderr"
        with open(self.stderr_path, "wb") as err:
            self.proc, self._reply = spawn_with_reply_pipe(
                [sys.executable, __file__, "--driver", str(plan)],
                stdout=subprocess.PIPE, stderr=err, env=env, cwd=ROOT,
            )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 1 << 20):
            now = time.monotonic()
            data = self._tail + chunk
            self.lines += data.count(MARKER)
            self._tail = data[-(len(MARKER) - 1) :]
            if self.keep:
                self.output += chunk
            if self.want_ranks:
                *complete, self._pending = (self._pending + chunk).split(b"\n")
                for line in complete:
                    if (m := PREFIX.search(line)) is not None:
                        self.ranks.add(int(m.group(1)))
                if self.t_ranks is None and len(self.ranks) >= self.want_ranks:
                    self.t_ranks = now
                    self.done.set()
            if self.want_lines and self.t_lines is None and self.lines >= self.want_lines:
                self.t_lines = now
                self.done.set()

    def wait(self, what: str, timeout: float) -> None:
        """Until the awaited lines or ranks were read; else TimeoutError saying so."""
        if not self.done.wait(timeout):
            seen = f"{self.lines} client lines"
            if self.want_ranks:
                seen += f" from ranks {sorted(self.ranks)}"
            raise TimeoutError(f"{what}: not read within {timeout:.0f} s ({seen})")

    def call(self, what: str, wait: float, **cmd: Any) -> dict[str, Any]:
        """Send a command (none: just await the spawn answer); its answer, within `wait`."""
        assert self.proc.stdin is not None
        if cmd:
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            self.proc.stdin.flush()
        deadline, buf = time.monotonic() + wait, b""
        with selectors.DefaultSelector() as sel:
            sel.register(self._reply, selectors.EVENT_READ)
            while not buf.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"Monarch's driver did not answer {what} within {wait:.0f} s"
                    )
                if sel.select(left):
                    chunk = os.read(self._reply, 65536)
                    if not chunk:
                        raise RuntimeError(
                            f"Monarch's driver exited during {what}: {self.stderr()}"
                        )
                    buf += chunk
        self._watch()
        answer: dict[str, Any] = json.loads(buf)
        if not answer["ok"]:
            raise RuntimeError(f"{what} failed in Monarch's driver: {answer['error']}")
        return answer

    def finish(self, timeout: float = 30) -> None:
        """Let the driver exit on its own (its output complete), bounded."""
        self.call("exit", timeout, cmd="exit")
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"Monarch's driver did not exit within {timeout:.0f} s") from None
        self._reader.join(timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-2000:]

    def _watch(self) -> None:
        with contextlib.suppress(psutil.Error):
            self._descendants.update(psutil.Process(self.proc.pid).children(recursive=True))

    def close(self) -> None:
        """Kill the driver's process group and every process seen below it."""
        self._watch()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for child in self._descendants:
            with contextlib.suppress(psutil.Error):
                child.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        psutil.wait_procs(list(self._descendants), timeout=5)
        os.close(self._reply)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()


@contextlib.contextmanager
def driver(procs: int, script: Any, **kw: Any) -> Iterator[Run]:
    with tempfile.TemporaryDirectory(prefix="bench-monarch-") as tmp:
        run = Run(Path(tmp), procs, script, **kw)
        try:
            yield run
        finally:
            run.close()


def _script(seed: int = 1, **kw: Any) -> Any:
    from fake_procs import script

    return script(seed, **kw)


# -- the figures ----------------------------------------------------------------------------


def throughput(children: int, lines: int, line_bytes: int) -> float:
    """Client lines per second from `spawn_procs` until every line was read."""
    flood = _script(flavour="ascii").flood(lines, line_bytes - 1)
    want = children * lines
    with driver(children, flood, want_lines=want) as run:
        t0 = float(run.call("spawn", 180)["t0"])
        run.wait(f"{want:,} client lines", 300)
        assert run.t_lines is not None
        run.call("ProcMesh.stop()", 60, cmd="stop", timeout=60)
        return want / (run.t_lines - t0)


def barrier_latency(children: int, rounds: int) -> float:
    """Median of `rounds` flushes of idle procs whose one line reached the client."""
    with driver(children, _script().line().hang(), want_lines=children) as run:
        run.call("spawn", 180)
        run.wait(f"the first line of {children} procs", 60)
        samples = run.call("flush", 30 * rounds, cmd="flush", rounds=rounds, timeout=30)["samples"]
        run.call("ProcMesh.stop()", 60, cmd="stop", timeout=60)
        return float(statistics.median(samples))


def stop_alone(children: int) -> float:
    """`procs.stop().get()` alone, of procs idle after a line and a final partial line;
    what reached the client is checked (the partial lines are reported, not required)."""
    s = _script().line("one").partial("tail").hang()
    with driver(children, s, keep=True, want_lines=children) as run:
        run.call("spawn", 180)
        run.wait(f"the first line of {children} procs", 60)  # all are running
        elapsed = float(run.call("ProcMesh.stop()", 60, cmd="stop", timeout=60)["duration_s"])
        run.finish()
        got: dict[int, list[bytes]] = {r: [] for r in range(children)}
        for line in bytes(run.output).split(b"\n"):
            if (m := PREFIX.search(line)) is not None:
                got.setdefault(int(m.group(1)), []).append(line[m.end() :])
        for rank, lines in got.items():
            first = f"[{rank}] one".encode()
            assert lines[:1] == [first], f"rank {rank}: the client printed {lines}"
            assert lines[1:] in ([], [f"[{rank}] tail".encode()]), f"rank {rank}: {lines}"
        tails = sum(len(lines) == 2 for lines in got.values())
        note(f"stop(): every proc's line reached the client; {tails}/{children} final "
             "partial lines did")  # fmt: skip
        return elapsed


def spawn_to_first_lines(children: int, warm: bool) -> float:
    """From `spawn_procs` until a client line of every proc was read."""
    with driver(children, _script().line("hello"), warm=warm, want_ranks=children) as run:
        t0 = float(run.call("spawn", 180)["t0"])
        run.wait(f"a first line of each of {children} procs", 60)
        assert run.t_ranks is not None
        run.call("ProcMesh.stop()", 60, cmd="stop", timeout=60)
        return run.t_ranks - t0


@dataclass(frozen=True)
class Figure:
    name: str  # exactly bench_stack's Figure.name
    run: Callable[[], float]
    fmt: str  # "rate" | "ms"


FIGURES = [
    Figure("lines/s, 2 children, 41-byte lines", lambda: throughput(2, 1_000_000, 41), "rate"),
    Figure("lines/s, 8 children, 100-byte lines", lambda: throughput(8, 250_000, 100), "rate"),
    Figure("barrier latency, 1 child", lambda: barrier_latency(1, 30), "ms"),
    Figure("barrier latency, 8 children", lambda: barrier_latency(8, 30), "ms"),
    Figure("barrier latency, 64 children", lambda: barrier_latency(64, 10), "ms"),
    Figure("stop(), 8 children, verified", lambda: stop_alone(8), "ms"),
    Figure("spawn -> first line of all 32 children", lambda: spawn_to_first_lines(32, True), "ms"),
    Figure("the same, cold (host interpreter started for it)",
           lambda: spawn_to_first_lines(32, False), "ms"),
]  # fmt: skip


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def fmt(kind: str, v: float) -> str:
    return f"{v:,.0f}/s" if kind == "rate" else f"{v * 1000:.1f} ms"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--driver"]:
        return driver_main(argv[1], int(argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="figure names (or substrings); none: all")
    parser.add_argument("--json", action="store_true", help="last stdout line: {name: median}")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (default 3)")
    args = parser.parse_args(argv)
    chosen = [f for f in FIGURES if not args.names or any(n in f.name for n in args.names)]
    medians: dict[str, float] = {}
    rows = []
    for fig in chosen:
        samples = []
        try:
            for _ in range(args.repeat):
                samples.append(fig.run())
        except Exception as exc:  # one figure failing leaves the others measured
            note(f"{fig.name}: failed on Monarch after {len(samples)} run(s): "
                 f"{type(exc).__name__}: {exc}")  # fmt: skip
            continue
        medians[fig.name] = statistics.median(samples)
        shown = ", ".join(fmt(fig.fmt, s) for s in samples)
        rows.append(f"| {fig.name} | {fmt(fig.fmt, medians[fig.name])} | {shown} |")
        note(f"{fig.name:48} {fmt(fig.fmt, medians[fig.name]):>14}   ({shown})")
    if args.json:
        print(json.dumps(medians))
    else:
        print(f"\nMonarch 0.7.0, medians of {args.repeat} runs ({os.cpu_count()} cores)\n")
        print("| figure | median | samples |\n|---|---|---|")
        print("\n".join(rows))
    return 0 if medians or not chosen else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
