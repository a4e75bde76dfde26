"""`TorchrunMeshClient`: the harness's handle on one `torchrun` launch, run from the driver.

The launcher is `python -m torch.distributed.run` in a session of its own, its stdout and
stderr being the mesh's client output files (the console a torchrun user reads). Its
ranks start sessions of their own too, so they are found by the pids they leave
(`rank.py`) and by psutil, and every one of them is ended by `close()` whatever torchrun
did. Every wait has a deadline; one that passes names what was waited for. Nothing here
imports torch: the pytest process stays free of it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from ..backend import MeshPlan
from ..foreign import ranks as per_rank
from ..foreign.processes import below, end_session, is_running
from ..stack import BarrierOutcome, ExitInfo, MeshError, StopOutcome, StopProblem
from ..stack.channel import private_dir
from .console import Console, console_problems, parse_console, rank_files, write_views

LAUNCHER = ("-m", "torch.distributed.run")
START_S = 60.0
"""Importing torch and starting the ranks; the first import in a fresh venv is slow."""


class AlwaysFiles:
    """torchrun has no environment gate: with `--tee`/`--redirects` it writes every
    rank's files (its console tee reads them), in whatever environment."""

    def file_log_gate(self) -> str | None:
        return None


def launcher_argv(
    plan: MeshPlan, log_dir: Path, scripts: Path, records: Path, pids: Path
) -> list[str]:
    """The torchrun command line of a mesh: one node, N local ranks, no restarts."""
    streams = "--tee=3" if plan.options.stream_to_client else "--redirects=3"
    return [
        sys.executable, *LAUNCHER, "--standalone", f"--nproc-per-node={len(plan.scripts)}",
        "--max-restarts=0", streams, f"--log-dir={log_dir}",
        "-m", "pytest_meshlog.torchrun.rank", str(scripts), str(records), str(pids),
    ]  # fmt: skip


class TorchrunMeshClient:
    """Satisfies `pytest_meshlog.backend.MeshClient` for one torchrun launch."""

    has_journal = False
    has_barrier = False

    def __init__(self, plan: MeshPlan) -> None:
        opts = plan.options
        self.workdir = plan.workdir
        self.ranks = list(range(len(plan.scripts)))
        self.prefix_with_rank = opts.prefix_with_rank
        self.config = AlwaysFiles()
        self.record_dir = str(plan.workdir / "records")
        self.log_dir = Path(plan.log_dir) if plan.log_dir else plan.workdir / "torchrun-logs"
        self.exits: dict[int, ExitInfo] = {}
        self.pids: dict[int, int] = {}
        self.notes: list[str] = []
        self.launcher_code: int | None = None
        self._scripts = plan.scripts
        self._killed: dict[int, int] = {}
        self._unstarted: list[int] = []
        self._procs: dict[int, psutil.Process] = {}
        self._tree: set[psutil.Process] = set()
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp = private_dir("ml-trun-")  # torchrun's TMPDIR; the leak check watches it
        self.output_paths = (plan.workdir / "client.stdout", plan.workdir / "client.stderr")
        if opts.read_log_buffer != 100:
            self.notes.append(f"read_log_buffer={opts.read_log_buffer} has no torchrun equivalent")
        try:
            self._start(plan)
        except BaseException:
            self.close()
            raise

    # -- the launcher ---------------------------------------------------------------------

    def _start(self, plan: MeshPlan) -> None:
        scripts = plan.workdir / "scripts"
        pids = plan.workdir / "torchrun-pids"
        for d in (pids, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        per_rank.write_scripts(plan.scripts, scripts, self.record_dir)
        env = dict(os.environ)
        env.update(plan.env)
        env["TMPDIR"] = self._tmp
        argv = launcher_argv(plan, self.log_dir, scripts, Path(self.record_dir), pids)
        with open(self.output_paths[0], "ab") as out, open(self.output_paths[1], "ab") as err:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                cwd=plan.workdir, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_S + plan.timeout
        start = time.monotonic()
        while len(self.pids) < len(self.ranks):
            for rank in self.ranks:
                path = pids / f"rank{rank}"
                if rank not in self.pids and path.exists():
                    self.pids[rank] = int(path.read_text())
                    with contextlib.suppress(psutil.Error):
                        self._procs[rank] = psutil.Process(self.pids[rank])
            self._watch()
            if len(self.pids) == len(self.ranks):
                break
            missing = [r for r in self.ranks if r not in self.pids]
            if self._proc.poll() is not None:  # e.g. a rank that failed at once ended all
                self._unstarted = missing
                self.notes.append(
                    f"torchrun exited ({self._proc.returncode}) before ranks {missing} ran "
                    f"their script ({time.monotonic() - start:.1f}s after it started)"
                )
                return
            if time.monotonic() > deadline:
                raise MeshError(
                    f"ranks {missing} never started after {time.monotonic() - start:.1f}s: "
                    f"torchrun did not start them; its stderr ends: {self._tail(1)!r}"
                )
            time.sleep(0.02)

    def _tail(self, target: int) -> str:
        path = self.output_paths[target]
        data = path.read_bytes() if path.exists() else b""
        return data[-600:].decode("utf-8", "replace")

    def _watch(self) -> None:
        """Remember every process below the launcher while it runs: its ranks start
        sessions of their own and are orphaned (not ours to find) if it dies first."""
        if self._proc is None:
            return
        self._tree.update(below(self._proc))
        self._tree.update(self._procs.values())

    @property
    def launcher_pid(self) -> int | None:
        """torchrun's own process, while it runs."""
        return None if self._proc is None else self._proc.pid

    def _end_all(self) -> list[int]:
        """SIGKILL the launcher's session and every process it started; the pids that
        were still alive."""
        proc, self._proc = self._proc, None
        self._tree.update(below(proc))
        alive = [p for p in self._tree if is_running(p)]
        code = end_session(proc, lambda: alive)
        if code is not None:
            self.launcher_code = code
        return sorted(p.pid for p in alive)

    # -- the MeshClient interface ---------------------------------------------------------

    @property
    def delivered(self) -> dict[tuple[int, str], list[bytes]]:
        """What torchrun's console showed so far, attributed to rank and stream."""
        return self.console().delivered

    def console(self) -> Console:
        return parse_console(self.output_paths, self.ranks, self.prefix_with_rank)

    def read_journal(self) -> list[dict[str, Any]]:
        return []  # torchrun keeps no journal of its teardown events

    def flush(self, timeout: float = 10.0) -> BarrierOutcome:
        raise MeshError("torchrun has no flush (no barrier between its agent and its ranks)")

    def kill(self, rank: int, sig: int = signal.SIGKILL, reason: str = "") -> None:
        per_rank.kill_rank(self._killed, self.pids, rank, sig)

    def inject(self, rank: int, what: str, *args: Any) -> None:
        raise MeshError(f"fault {what!r} cannot be injected into a torchrun launch")

    def wait_children(self, timeout: float) -> dict[int, ExitInfo]:
        """Until every rank's process has ended (a rank ends when its script does)."""
        done = per_rank.wait_for_exits(self.ranks, self._exit_info, timeout, each_round=self._watch)
        self.exits.update(done)
        return done

    def _exit_info(self, rank: int) -> ExitInfo | None:
        """How a rank ended, from its progress record, its process and the test's kills
        (the ranks are torchrun's children: their exit status is not ours to wait for)."""
        if is_running(self._procs.get(rank)):
            return None
        if rank in self._unstarted:
            return ExitInfo(None, None, killed_by_stack="torchrun ended it before its script ran")
        if rank in self._killed:
            return ExitInfo(None, self._killed[rank])
        end = per_rank.script_end(self.record_dir, rank)
        if end is not None:
            return end.info
        return ExitInfo(None, None, killed_by_stack="the rank died without saying how")

    def stop(self, timeout: float = 15.0) -> StopOutcome:
        """What a torchrun user's job does at its end: the launcher exits once every rank
        has; ranks still running get SIGTERM sent to the launcher (a scheduler's or a
        user's stop), which torchrun passes on to them. Bounded by `timeout`."""
        start = time.monotonic()
        problems: list[StopProblem] = []
        self._watch()
        proc = self._proc
        running = [r for r in self.ranks if is_running(self._procs.get(r))]
        if proc is not None and proc.poll() is None and running:
            self.notes.append(f"ranks {running} were still running at stop: SIGTERM to torchrun")
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if proc is not None:
            try:
                self.launcher_code = proc.wait(timeout)
                self.notes.append(
                    f"torchrun exited with {self.launcher_code} after "
                    f"{time.monotonic() - start:.2f}s"
                )
            except subprocess.TimeoutExpired:
                problems.append(
                    StopProblem(
                        "teardown_failed", tuple(self.ranks),
                        detail=f"torchrun (pid {proc.pid}) did not exit within {timeout:.1f}s "
                        f"of the stop; it was killed with every process it started",
                    )
                )  # fmt: skip
        exited = self.launcher_code is not None  # by itself, before any kill of ours
        left = self._end_all()
        if left and exited:
            problems.append(
                StopProblem(
                    "teardown_failed",
                    detail=f"processes {left} started by torchrun outlived it (killed)",
                )
            )
        for rank in self.ranks:
            info = self._exit_info(rank)
            self.exits[rank] = info if info is not None else ExitInfo(None, int(signal.SIGKILL))
        console = self.console()
        if console.own:
            shown = " / ".join(line.decode("utf-8", "replace") for _, line in console.own[-4:])
            self.notes.append(f"torchrun's own console lines ({len(console.own)}), last: {shown}")
        problems += (StopProblem("backend_output", detail=t) for t in console_problems(console))
        files = write_views(
            rank_files(self.log_dir, self.ranks),
            self.log_dir / "meshlog-view",
            self.prefix_with_rank,
        )
        return StopOutcome(
            barrier=None, exits=dict(self.exits), tails={}, files=files,
            unconfirmed_ranks=(), problems=problems, unconfirmed_clean_exits=(),
            duration_s=time.monotonic() - start,
        )  # fmt: skip

    def close(self) -> None:
        self._end_all()
        shutil.rmtree(self._tmp, ignore_errors=True)
