"""bench_stack's figures measured on Ray 2.60.0, where they apply.

    python benchmarks/bench_ray.py [--repeat N] [--only WORD] [--json]

Every run starts a fresh Ray driver program (this file with `--driver`, in a session of
its own), which imports Ray before any timer starts, then `ray.init()` (a local cluster:
GCS, raylet, log monitor, agents) with RAY_DEDUP_LOGS=0 and `log_to_driver=True`, and
one `ScriptActor` per rank, the actor the Ray backend uses (pytest_meshlog/ray/
script_actor.py), running the same fake_procs scripts as the reference children. The
driver's stdout is a pipe read here: only lines labelled `(ScriptActor pid=N)` with a pid
of this run are counted. Times are CLOCK_MONOTONIC, one clock for the machine: the start
comes from the driver, the end from this process when it reads the awaited line. Every
wait has a deadline naming what it waited for; the driver's process group and every
process that names its Ray temp dir are killed whatever happens.

Figures (medians of --repeat runs):

- `lines/s, 2 ranks, 41-byte lines`: from the actors' `run()` (actors up) until every
  line of both ranks was read on the driver's console (Ray's log monitor tails the worker
  files and publishes them through the GCS; the driver prints them);
- `ray.shutdown()`: timed in the driver, after every line was read;
- `spawn -> first line of all N ranks`: from creating the actors (cluster up) until a
  line of every rank was read; each actor is a new worker process;
- `ray.init(), local cluster`: the per-mesh cost of the backend's one cluster per mesh;
- `ray.init(address=...), running cluster`: a driver joining a cluster started once
  (`ray start --head`), what a cluster shared by a pytest session would cost per mesh.

Not measured: barrier latency (Ray has no flush of its log path).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import psutil

ROOT = Path(__file__).resolve().parents[1]
LABEL = re.compile(rb"\((?:\S+ )?pid=(\d+)\)")
DEADLINE_S = 180.0


def driver(args: argparse.Namespace) -> int:
    """The Ray driver program: one JSON line on the reply fd per step; waits for `stop`."""
    import ray

    sys.path.insert(0, str(ROOT))
    from fake_procs import FakeProcs
    from pytest_meshlog.ray.script_actor import ScriptActor

    reply = os.fdopen(args.reply_fd, "w", buffering=1)
    work = Path(args.workdir)
    fake = FakeProcs(seed=7)
    for rank in range(args.procs):
        s = (
            fake.flooder(lines=args.lines, line_bytes=args.line_bytes)
            if args.lines
            else fake.script().line()
        )
        s.write(work / f"rank{rank}.json")
    (work / "records").mkdir(exist_ok=True)
    t = time.monotonic()
    if args.address:
        ray.init(address=args.address, log_to_driver=True)
    else:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=True, _temp_dir=args.temp)
    init_s = time.monotonic() - t
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    actor = ray.remote(num_cpus=0, max_restarts=0)(ScriptActor)
    t_spawn = time.monotonic()
    actors = [actor.remote(r, str(work), str(work / "records")) for r in range(args.procs)]
    pids = ray.get([a.prepare.remote() for a in actors], timeout=DEADLINE_S)
    t_run = time.monotonic()
    ray.get([a.run.remote() for a in actors], timeout=DEADLINE_S)
    reply.write(
        json.dumps({"init_s": init_s, "t_spawn": t_spawn, "t_run": t_run, "pids": pids}) + "\n"
    )
    sys.stdin.readline()
    t = time.monotonic()
    ray.shutdown()
    reply.write(json.dumps({"shutdown_s": time.monotonic() - t}) + "\n")
    return 0


class Run:
    """One driver program, its console read line by line."""

    def __init__(self, procs: int, lines: int, line_bytes: int, address: str | None = None) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
        self.temp = tempfile.mkdtemp(prefix="ml-ray-", dir="/tmp")
        r, w = os.pipe()
        cmd = [sys.executable, __file__, "--driver", "--procs", str(procs), "--lines", str(lines),
               "--line-bytes", str(line_bytes), "--workdir", str(self.work), "--temp", self.temp,
               "--reply-fd", str(w)]  # fmt: skip
        if address:
            cmd += ["--address", address]
        env = {**os.environ, "RAY_DEDUP_LOGS": "0", "RAY_USAGE_STATS_ENABLED": "0"}
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            pass_fds=(w,), env=env, start_new_session=True,
        )  # fmt: skip
        os.close(w)
        self.reply = os.fdopen(r, "rb")
        self.buf = b""

    def answer(self, what: str) -> dict[str, object]:
        line = _readline(self.reply, DEADLINE_S)
        if line is None:
            raise TimeoutError(
                f"the Ray driver did not answer {what} within {DEADLINE_S} s (or exited: "
                f"{self.proc.poll()})"
            )
        return dict(json.loads(line))

    def read_until(self, done: Callable[[int, int], bool], what: str) -> float:
        """Read labelled console lines until `done(pid, count)` says so; the time of that line."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + DEADLINE_S
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not sel.select(1.0):
                    continue
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                now = time.monotonic()
                data = self.buf + chunk
                cut = data.rfind(b"\n") + 1
                self.buf = data[cut:]
                for m in LABEL.finditer(data[:cut]):
                    if done(int(m.group(1)), 1):
                        return now
        raise TimeoutError(f"the driver's console did not show {what} within {DEADLINE_S} s")

    def stop(self) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"stop\n")
        self.proc.stdin.flush()
        return float(self.answer("ray.shutdown()")["shutdown_s"])  # type: ignore[arg-type]

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for p in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if any(self.temp in a for a in p.info["cmdline"] or ()):
                    p.kill()
        self.proc.wait(10)
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.temp, ignore_errors=True)


def _readline(f: BinaryIO, wait: float) -> bytes | None:
    """One answer line of the driver; None when it closed the pipe or after `wait`."""
    fd = f.fileno()
    deadline, buf = time.monotonic() + wait, b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(1.0):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            buf += chunk
            if buf.endswith(b"\n"):
                return buf
    return None


def throughput(lines: int) -> dict[str, float]:
    run = Run(2, lines, 41)
    try:
        start = run.answer("ray.init() and the actors' start")
        pids = set(start["pids"])  # type: ignore[call-overload]
        counts = dict.fromkeys(pids, 0)

        def done(pid: int, n: int) -> bool:
            if pid in counts:
                counts[pid] += n
            return all(c >= lines for c in counts.values())

        end = run.read_until(done, f"{lines} lines of each of 2 ranks")
        rate = 2 * lines / (end - float(start["t_run"]))  # type: ignore[arg-type]
        return {"lines/s, 2 ranks, 41-byte lines": rate, "ray.shutdown()": run.stop(),
                "ray.init(), local cluster": float(start["init_s"])}  # type: ignore[arg-type]  # fmt: skip
    finally:
        run.close()


def first_lines(procs: int) -> dict[str, float]:
    run = Run(procs, 0, 0)
    try:
        start = run.answer("ray.init() and the actors' start")
        seen: set[int] = set()
        pids = set(start["pids"])  # type: ignore[call-overload]

        def done(pid: int, n: int) -> bool:
            seen.add(pid)
            return pids <= seen

        end = run.read_until(done, f"a line of each of {procs} ranks")
        return {f"spawn -> first line of all {procs} ranks": end - float(start["t_spawn"])}  # type: ignore[arg-type]
    finally:
        run.stop()
        run.close()


def join_cluster(repeat: int) -> dict[str, float]:
    """A cluster started once (`ray start --head`), then `repeat` drivers joining it."""
    temp = tempfile.mkdtemp(prefix="ml-ray-", dir="/tmp")
    ray_bin = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    out = subprocess.run(
        [ray_bin, "start", "--head", "--num-cpus=1", "--include-dashboard=false",
         "--node-ip-address=127.0.0.1", "--port=0", f"--temp-dir={temp}", "--disable-usage-stats"],
        capture_output=True, text=True, env=env, timeout=DEADLINE_S, check=False,
    )  # fmt: skip
    port = re.search(r"address='[^:']*:(\d+)'", out.stdout + out.stderr)
    times: list[float] = []
    try:
        if port is None:
            raise RuntimeError(f"ray start --head failed: {(out.stdout + out.stderr)[-2000:]}")
        for _ in range(repeat):
            run = Run(1, 0, 0, address=f"127.0.0.1:{port.group(1)}")
            try:
                times.append(float(run.answer("ray.init(address=...)")["init_s"]))  # type: ignore[arg-type]
                run.stop()
            finally:
                run.close()
    finally:
        for p in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if any(temp in a for a in p.info["cmdline"] or ()):
                    p.kill()
        shutil.rmtree(temp, ignore_errors=True)
    return {"ray.init(address=...), running cluster": statistics.median(times)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", action="store_true")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--lines", type=int, default=0)
    ap.add_argument("--line-bytes", type=int, default=41)
    ap.add_argument("--workdir")
    ap.add_argument("--temp")
    ap.add_argument("--address")
    ap.add_argument("--reply-fd", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="", help="flood, first or join")
    ap.add_argument("--first-line-procs", type=int, default=8)
    ap.add_argument("--flood-lines", type=int, default=100_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.driver:
        return driver(args)
    groups = {
        "flood": lambda: throughput(args.flood_lines),
        "first": lambda: first_lines(args.first_line_procs),
    }
    samples: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        for group, measure in groups.items():
            if args.only in group:
                for name, value in measure().items():
                    samples.setdefault(name, []).append(value)
    if args.only in "join":
        try:
            for name, value in join_cluster(args.repeat).items():
                samples.setdefault(name, []).append(value)
        except (RuntimeError, TimeoutError) as exc:  # reported, the other figures still print
            print(f"a driver joining a running cluster: {exc}", file=sys.stderr)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    for name, value in medians.items():
        unit = "lines/s" if "lines/s" in name else "s"
        print(
            f"{name:45} {value:12,.3f} {unit}  (runs: {', '.join(f'{v:,.3f}' for v in samples[name])})"
        )
    if args.json:
        print(json.dumps(medians))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
