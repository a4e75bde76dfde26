"""`RayMeshClient`: the harness's handle on one Ray mesh, run from the pytest process.

Ray runs in a helper process (`helper.py`, the mesh's driver program) whose stdout and
stderr are the driver's console; this object sends it one command at a time and waits for
each answer under a deadline. A Ray call that does not answer in time is reported by name
and wait (`ray.init() did not return within 60.0 s`) and the helper is killed with every
process Ray started. Nothing here imports Ray.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from ..backend import MeshPlan
from ..foreign import ranks as per_rank
from ..foreign.helper_link import HelperLink, Wording
from ..foreign.processes import below, end_session, is_running
from ..lines import Lines
from ..report import Stream
from ..stack import BarrierOutcome, ExitInfo, MeshError, StopOutcome, StopProblem
from ..stack.private_dirs import private_dir
from .output import STREAMS, Parsed, file_lines, parse_console, worker_files

HELPER = "pytest_meshlog.ray.helper"
SLACK_S = 5.0
"""How much longer than a Ray call's own timeout the driver waits for its answer."""
INIT_S = 60.0
"""`ray.init()` starts the GCS, a raylet, the log monitor and agents: ~8 s on an idle
2-core machine, several times that when the machine is busy."""
GRACE_S = 5.0
"""How long Ray's processes get to end after `ray.shutdown()` returned."""
DEDUP_ENV = "MESHLOG_RAY_DEDUP"
"""`1`: run every mesh with Ray's RAY_DEDUP_LOGS on (Ray's default), to see what it
changes; otherwise it is on only for meshes with an aggregation window."""
_CALLS = {
    "init": "ray.init()",
    "spawn": "ScriptActor.remote() per rank + ray.get(prepare)",
    "stop": "ray.shutdown()",
    "exit": "the driver program's exit",
}
_WORDING = Wording(
    helper="the Ray driver program",
    call="",
    unit=" s",
    no_answer=lambda what, took, wait: f"{what} did not return within {wait:.1f} s",
)


@dataclass(frozen=True)
class RayGate:
    """Ray always writes each worker's stdout and stderr to its own files."""

    def file_log_gate(self) -> str | None:
        return None


class RayMeshClient:
    """Satisfies `pytest_meshlog.backend.MeshClient` for a Ray mesh."""

    has_journal = False
    has_barrier = False
    batch_lines = 1000
    """Ray's unit of delivery: its log monitor publishes at most 1,000 lines of a worker
    file per message (RAY_LOG_MONITOR_NUM_LINES_TO_READ), which the driver prints."""

    def __init__(self, plan: MeshPlan, name: str) -> None:
        opts = plan.options
        self.workdir = plan.workdir
        self.name = name
        self.ranks = list(range(len(plan.scripts)))
        self.prefix_with_rank = opts.prefix_with_rank
        self.aggregated = opts.aggregate_window_sec is not None
        self.config = RayGate()
        self.record_dir = str(plan.workdir / "records")
        self.exits: dict[int, ExitInfo] = {}
        self.pids: dict[int, int] = {}
        self.notes: list[str] = []
        self.timings: dict[str, float] = {}
        self._scripts = plan.scripts
        self._killed: dict[int, int] = {}
        self._link = HelperLink(_WORDING, _CALLS, self._kill_all)
        self._seen: set[psutil.Process] = set()
        self._files: dict[tuple[int, str], Path] = {}
        self._shm_before = _shm_entries()
        # Ray's _temp_dir: short (its socket paths must fit in ~107 bytes), 0700, watched
        # by the leak check; its logs are moved into the work directory at the end
        self._tmp = private_dir("ml-ray-")
        self.logs_dir = plan.workdir / "ray-logs"
        self.output_paths = (plan.workdir / "client.stdout", plan.workdir / "client.stderr")
        try:
            self._start(plan)
        except BaseException:
            self.close()
            raise

    # -- the helper -----------------------------------------------------------------------

    def _start(self, plan: MeshPlan) -> None:
        opts = plan.options
        scripts_dir = plan.workdir / "scripts"
        per_rank.write_scripts(plan.scripts, scripts_dir, self.record_dir)
        plan_path = plan.workdir / "ray-plan.json"
        plan_path.write_text(
            json.dumps(
                {
                    "procs": len(plan.scripts),
                    "name": self.name,
                    "scripts_dir": str(scripts_dir),
                    "record_dir": self.record_dir,
                    "temp_dir": self._tmp,
                    "log_to_driver": opts.stream_to_client,
                }
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(plan.env)
        window = opts.aggregate_window_sec
        dedup = window is not None or os.environ.get(DEDUP_ENV) == "1"
        env["RAY_DEDUP_LOGS"] = "1" if dedup else "0"
        if window is not None:
            seconds = max(1, math.ceil(window))  # Ray's window is whole seconds
            env["RAY_DEDUP_LOGS_AGG_WINDOW_S"] = str(seconds)
            if seconds != window:
                self.notes.append(
                    f"aggregate_window_sec={window} ran as RAY_DEDUP_LOGS_AGG_WINDOW_S={seconds}"
                )
        env["RAY_USAGE_STATS_ENABLED"] = "0"  # no network calls from a test
        with open(self.output_paths[0], "ab") as out, open(self.output_paths[1], "ab") as err:
            self._link.start(
                [sys.executable, "-m", HELPER, str(plan_path)],
                stdout=out, stderr=err, env=env, cwd=plan.workdir,
            )  # fmt: skip
        answer = self._call("init", INIT_S)
        self.timings["ray.init"] = float(answer["init_s"])
        self._watch()
        answer = self._call("spawn", plan.timeout + SLACK_S, timeout=plan.timeout)
        self.timings["spawn"] = float(answer["spawn_s"])
        self.pids = {int(r): int(p) for r, p in answer["pids"].items()}
        self._watch()

    def _call(self, cmd: str, wait: float, **args: Any) -> dict[str, Any]:
        """One command; its answer, or MeshError naming the Ray call and the wait."""
        return self._link.call(cmd, wait, **args)

    def _watch(self) -> None:
        """Remember every process below the helper (Ray's GCS, raylet, agents, workers)."""
        self._seen.update(below(self._link.proc))

    def ray_processes(self) -> list[psutil.Process]:
        """Ray's processes of this mesh still running: those seen below the helper, and
        any process whose command line names this mesh's Ray temp dir (a daemon that left
        the helper's tree)."""
        alive = {p for p in self._seen if is_running(p)}
        for proc in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if any(self._tmp in arg for arg in proc.info["cmdline"] or ()) and is_running(proc):
                    alive.add(proc)
        return sorted(alive, key=lambda p: p.pid)

    def _kill_all(self) -> None:
        """Kill the helper and every process Ray started for this mesh."""
        proc = self._link.take()
        self._seen.update(below(proc))
        end_session(proc, self.ray_processes)

    @property
    def helper_pid(self) -> int | None:
        """The helper process (the mesh's Ray driver program), while it runs."""
        return self._link.pid

    # -- the MeshClient interface ---------------------------------------------------------

    @property
    def delivered(self) -> dict[tuple[int, str], list[bytes]]:
        """What the driver printed so far, attributed to rank (by pid) and stream."""
        return self.parsed().delivered

    def parsed(self) -> Parsed:
        return parse_console(
            self.output_paths,
            {pid: rank for rank, pid in self.pids.items()},
            self.ranks,
            prefix_with_rank=self.prefix_with_rank,
            aggregated=self.aggregated,
            emitted=self._emitted,
        )

    def file_lines_by_rank(self) -> dict[tuple[int, str], Lines]:
        """Each rank's worker files (the rank from the pid in the file's name), without
        Ray's marker lines: the evidence takes these instead of attributing by content."""
        out: dict[tuple[int, str], Lines] = {}
        for rank in self.ranks:
            for stream in STREAMS:
                path = self._files.get((rank, stream))
                lines = (
                    []
                    if path is None
                    else file_lines(path, rank, prefix_with_rank=self.prefix_with_rank)
                )
                out[rank, stream] = Lines.of(lines)
        return out

    def _emitted_bytes(self) -> dict[tuple[int, Stream], bytes]:
        """What each rank wrote to each stream, from its progress record."""
        return per_rank.emitted_by_rank(self.record_dir, self._scripts, self.ranks)

    def _emitted(self) -> dict[tuple[int, str], int]:
        return per_rank.emitted_line_counts(
            self._emitted_bytes(), prefix_with_rank=self.prefix_with_rank
        )

    def read_journal(self) -> list[dict[str, Any]]:
        return []  # Ray keeps no journal of its log path

    def flush(self, timeout: float = 10.0) -> BarrierOutcome:
        raise MeshError("Ray has no flush of its log path (see NOT_APPLICABLE['barrier'])")

    def kill(self, rank: int, sig: int = signal.SIGKILL, reason: str = "") -> None:
        per_rank.kill_rank(self._killed, self.pids, rank, sig)

    def inject(self, rank: int, what: str, *args: Any) -> None:
        raise MeshError(f"fault {what!r} cannot be injected into a Ray mesh")

    def wait_children(self, timeout: float) -> dict[int, ExitInfo]:
        """Until every rank's script has ended (its worker lives on until ray.shutdown())."""
        done = per_rank.wait_for_exits(self.ranks, self._exit_info, timeout)
        self.exits.update(done)
        return done

    def _exit_info(self, rank: int) -> ExitInfo | None:
        """How a rank ended, from its progress record, its worker's pid and the test's
        kills: a script that ended leaves its worker alive (the actor lives on)."""
        died = "the worker died without saying how"
        return per_rank.outliving_exit(self.record_dir, rank, self.pids, self._killed, died)

    def stop(self, timeout: float = 15.0) -> StopOutcome:
        """`ray.shutdown()` (what a Ray program does at its end), then the driver program's
        exit; each under the deadline. No barrier: Ray has none."""
        start = time.monotonic()
        problems: list[StopProblem] = []
        self._watch()
        if self._link.proc is not None:
            try:
                answer = self._call("stop", timeout + SLACK_S)
                self.timings["ray.shutdown"] = float(answer["shutdown_s"])
            except MeshError as exc:
                problems.append(StopProblem("teardown_failed", tuple(self.ranks), detail=str(exc)))
        if self._link.proc is not None:
            try:
                self._call("exit", timeout)
                self._link.proc.wait(timeout)
            except (MeshError, subprocess.TimeoutExpired) as exc:
                problems.append(
                    StopProblem(
                        "teardown_failed", detail=f"the Ray driver program did not exit: {exc}"
                    )
                )
        left = self._after_shutdown()
        if left:
            problems.append(
                StopProblem(
                    "teardown_failed",
                    detail=f"{GRACE_S:.0f} s after ray.shutdown() returned, Ray's processes "
                    + ", ".join(f"{_cmd(p)} (pid {p.pid})" for p in left)
                    + " were still running; killed",
                )
            )
        self._kill_all()
        # a worker still running its script ends by ray.shutdown(): a normal teardown
        stopped = per_rank.exits_at_stop(self.ranks, self.exits, self._exit_info)
        if stopped:
            self.notes.append(f"ranks {stopped} were still running their script at stop")
        files = self._take_logs()
        problems += self._output_problems()
        shm = _shm_entries() - self._shm_before
        if shm:
            problems.append(
                StopProblem(
                    "teardown_failed",
                    detail=f"new /dev/shm entries after ray.shutdown(): {sorted(shm)}",
                )
            )
        return StopOutcome(
            barrier=None, exits=dict(self.exits), tails={}, files=files,
            unconfirmed_ranks=(), problems=problems, unconfirmed_clean_exits=(),
            duration_s=time.monotonic() - start,
        )  # fmt: skip

    def _after_shutdown(self) -> list[psutil.Process]:
        """Ray's processes still running `GRACE_S` after the driver program ended."""
        deadline = time.monotonic() + GRACE_S
        left = self.ray_processes()
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = self.ray_processes()
        return left

    def _output_problems(self) -> list[StopProblem]:
        parsed = self.parsed()
        out = []
        if parsed.unattributed:
            shown = "; ".join(f"{s}: {line[:120]!r}" for s, line in parsed.unattributed[:3])
            out.append(
                StopProblem(
                    "backend_output",
                    detail=f"{len(parsed.unattributed)} line(s) on the Ray driver's console "
                    f"could not be attributed to a worker of this mesh: {shown}",
                )
            )
        if parsed.ray_messages:
            shown = "; ".join(f"{s}: {line[:160]!r}" for s, line in parsed.ray_messages[:5])
            self.notes.append(f"Ray's own messages on the driver's console: {shown}")
        return out

    def _take_logs(self) -> list[str]:
        """Move the session's log folder into the work directory (Ray leaves its temp dir
        behind; the test owns what it judged); the worker files of this mesh's ranks."""
        if self._files:
            return sorted(str(p) for p in self._files.values())
        session = Path(self._tmp) / "session_latest"
        logs = session.resolve() / "logs" if session.exists() else None
        if logs is not None and logs.is_dir() and not self.logs_dir.exists():
            with contextlib.suppress(OSError):
                shutil.move(str(logs), self.logs_dir)
        self._files = worker_files(self.logs_dir, {pid: r for r, pid in self.pids.items()})
        return sorted(str(p) for p in self._files.values())

    def close(self) -> None:
        if self._link.proc is not None or self._seen:
            self._kill_all()
        self._link.close()
        self._take_logs()
        shutil.rmtree(self._tmp, ignore_errors=True)


def _cmd(proc: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        cmd = proc.cmdline()
        return " ".join(cmd)[:100] if cmd else proc.name()
    return "?"


def _shm_entries() -> set[str]:
    """Ray's entries in /dev/shm (its object store's, by name)."""
    try:
        names = os.listdir("/dev/shm")
    except OSError:
        return set()
    return {n for n in names if n.startswith(("plasma", "ray"))}
