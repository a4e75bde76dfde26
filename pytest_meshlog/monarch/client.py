"""`MonarchMeshClient`: the harness's handle on one Monarch mesh, run from the driver.

Monarch itself runs in a helper process (`helper.py`) whose stdout and stderr are the
mesh's client output files; this object sends it one command at a time and waits for each
answer under a deadline. A Monarch call that does not answer in time is reported (which
call, after how long) and the helper is killed with every process below it. Nothing here
imports Monarch: the pytest process stays free of it.
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
from typing import Any

import psutil

from ..backend import MeshPlan
from ..foreign import ranks as per_rank
from ..foreign.helper_link import HelperLink, Wording
from ..foreign.processes import below, end_session
from ..report import Stream
from ..stack import BarrierOutcome, ExitInfo, MeshError, StopOutcome, StopProblem
from ..stack.channel import private_dir
from .output import STREAMS, Parsed, output_problems, parse_output

HELPER = "pytest_meshlog.monarch.helper"
SLACK_S = 5.0
"""How much longer than a Monarch call's own timeout the driver waits for its answer."""
START_S = 60.0
"""Importing Monarch and spawning the procs; the first import in a fresh venv is slow."""
FAULT_HOOK_ENV = "MESHLOG_MONARCH_FAULT_HOOK"
"""`record`: the helper replaces Monarch's unhandled_fault_hook (which exits the driver
when a proc dies) with one that records the failure and goes on (see helper.py)."""
_WORDING = Wording(
    helper="the Monarch helper",
    call="Monarch call ",
    unit="s",
    no_answer=lambda what, took, wait: f"Monarch call {what} did not return after {took:.1f}s",
)


@dataclass(frozen=True)
class MonarchGate:
    """The per-host file rules of Monarch 0.7.0 (`FileAppender::new`), as the evidence
    needs them: files unless the environment is local without HYPERACTOR_FORCE_FILE_LOG."""

    env: str
    force_file_log: bool

    def file_log_gate(self) -> str | None:
        if self.env == "local" and not self.force_file_log:
            return "environment is local and HYPERACTOR_FORCE_FILE_LOG is false"
        return None


class MonarchMeshClient:
    """Satisfies `pytest_meshlog.backend.MeshClient` for a Monarch mesh."""

    def __init__(self, plan: MeshPlan, name: str) -> None:
        opts = plan.options
        self.workdir = plan.workdir
        self.name = name
        self.ranks = list(range(len(plan.scripts)))
        self.prefix_with_rank = opts.prefix_with_rank
        self.aggregated = opts.aggregate_window_sec is not None
        self.config = MonarchGate(opts.env, opts.force_file_log)
        self.record_dir = str(plan.workdir / "records")
        self.exits: dict[int, ExitInfo] = {}
        self.pids: dict[int, int] = {}
        self.notes: list[str] = []
        self.has_journal = False
        self._scripts = plan.scripts
        self._killed: dict[int, int] = {}
        self._files: list[str] = []
        self._version = 0
        self._link = HelperLink(_WORDING, _CALLS, self._kill_helper)
        self._descendants: set[psutil.Process] = set()
        self._tmp = private_dir("ml-mon-")  # Monarch's TMPDIR; the leak check watches it
        self.output_paths = (plan.workdir / "client.stdout", plan.workdir / "client.stderr")
        self.faults_record = plan.workdir / "monarch-supervision.txt"
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
        window = opts.aggregate_window_sec
        monarch_window = None if window is None else max(1, math.ceil(window))
        if window is not None and monarch_window != window:
            self.notes.append(
                f"aggregate_window_sec={window} ran as {monarch_window}: Monarch 0.7.0 takes whole seconds"
            )
        plan_path = plan.workdir / "monarch-plan.json"
        plan_path.write_text(
            json.dumps(
                {
                    "procs": len(plan.scripts),
                    "name": self.name,
                    "scripts_dir": str(scripts_dir),
                    "record_dir": self.record_dir,
                    "stream_to_client": opts.stream_to_client,
                    "aggregate_window_sec": monarch_window,
                    "faults_record": str(self.faults_record),
                    "keep_going": os.environ.get(FAULT_HOOK_ENV) == "record",
                }
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAST_")}
        env.update(plan.env)
        env.update(
            HYPERACTOR_MESH_ENABLE_LOG_FORWARDING="true",
            HYPERACTOR_MESH_ENABLE_FILE_CAPTURE="true",  # the FileAppender; its env gate decides
            HYPERACTOR_FORCE_FILE_LOG=str(opts.force_file_log).lower(),
            HYPERACTOR_PREFIX_WITH_RANK=str(opts.prefix_with_rank).lower(),
            HYPERACTOR_READ_LOG_BUFFER=str(opts.read_log_buffer),
            TMPDIR=self._tmp,
        )
        if opts.env != "local":  # a non-local environment that writes files on one machine
            env["MAST_ENVIRONMENT"] = "local_mast_simulator"
        with open(self.output_paths[0], "ab") as out, open(self.output_paths[1], "ab") as err:
            self._link.start(
                [sys.executable, "-m", HELPER, str(plan_path)],
                stdout=out, stderr=err, env=env, cwd=plan.workdir,
            )  # fmt: skip
        answer = self._call("spawn", START_S, timeout=plan.timeout)
        self.pids = {int(r): int(p) for r, p in answer["pids"].items()}
        self._files = list(answer["files"])
        self._watch_descendants()

    def _call(self, cmd: str, wait: float, **args: Any) -> dict[str, Any]:
        """One command; its answer, or MeshError naming the Monarch call and the wait."""
        return self._link.call(cmd, wait, **args)

    def _watch_descendants(self) -> None:
        self._descendants.update(below(self._link.proc))

    def _kill_helper(self) -> None:
        """Kill the helper and everything below it (Monarch's procs included)."""
        proc = self._link.take()
        if proc is None:
            return
        self._descendants.update(below(proc))
        end_session(proc, lambda: self._descendants)

    @property
    def helper_pid(self) -> int | None:
        """The helper process (Monarch's driver side), while it runs."""
        return self._link.pid

    # -- the MeshClient interface ---------------------------------------------------------

    @property
    def delivered(self) -> dict[tuple[int, str], list[bytes]]:
        """What Monarch's client printed so far, attributed to rank and stream."""
        return self.parsed().delivered

    def parsed(self) -> Parsed:
        return parse_output(
            self.output_paths,
            self.name,
            self.ranks,
            aggregated=self.aggregated,
            emitted=self._emitted,
        )

    def _emitted_bytes(self) -> dict[tuple[int, Stream], bytes]:
        """What each rank wrote to each stream, from its progress record."""
        return per_rank.emitted_by_rank(self.record_dir, self._scripts, self.ranks)

    def _emitted(self) -> dict[tuple[int, str], int]:
        return per_rank.emitted_line_counts(
            self._emitted_bytes(), prefix_with_rank=self.prefix_with_rank
        )

    def read_journal(self) -> list[dict[str, Any]]:
        return []  # Monarch keeps no journal of its teardown events

    def flush(self, timeout: float = 10.0) -> BarrierOutcome:
        self._version += 1
        version, ranks = self._version, tuple(self.ranks)
        start = time.monotonic()
        try:
            answer = self._call("flush", timeout + SLACK_S, version=version, timeout=timeout)
        except MeshError as exc:
            self.notes.append(f"barrier {version}: {exc}")
            latency = time.monotonic() - start
            return BarrierOutcome(version, "timeout", (), ranks, latency, expected=ranks)
        if answer["status"] == "completed":
            return BarrierOutcome(
                version, "completed", ranks, (), answer["latency_s"], expected=ranks
            )
        self.notes.append(f"barrier {version}: Monarch's flush ended with {answer['error']}")
        # Monarch's flush does not say which procs did not answer: all of them are named
        return BarrierOutcome(version, "timeout", (), ranks, answer["latency_s"], expected=ranks)

    def kill(self, rank: int, sig: int = signal.SIGKILL, reason: str = "") -> None:
        per_rank.kill_rank(self._killed, self.pids, rank, sig)

    def inject(self, rank: int, what: str, *args: Any) -> None:
        raise MeshError(f"fault {what!r} cannot be injected into a Monarch mesh")

    def wait_children(self, timeout: float) -> dict[int, ExitInfo]:
        """Until every proc's script has ended (its proc may live on until stop)."""
        done = per_rank.wait_for_exits(self.ranks, self._exit_info, timeout)
        self.exits.update(done)
        return done

    def _exit_info(self, rank: int) -> ExitInfo | None:
        """How a rank ended, from its progress record, its pid and the test's kills: a
        script that ended leaves its proc alive (Monarch procs outlive their actors' work)."""
        died = "the proc died without saying how"
        return per_rank.outliving_exit(self.record_dir, rank, self.pids, self._killed, died)

    def stop(self, timeout: float = 15.0) -> StopOutcome:
        """Barrier, then `ProcMesh.stop()`, then the helper's own exit (which shuts the
        local host down and closes its files), each under the deadline."""
        start = time.monotonic()
        problems: list[StopProblem] = []
        barrier = self.flush(timeout)
        if not barrier.completed:  # judged from the mesh's barriers, where it also is
            problems.append(
                StopProblem(
                    "barrier_incomplete",
                    barrier.missing_ranks,
                    detail=f"v{barrier.version} {barrier.status}",
                )
            )
        self._watch_descendants()
        try:
            answer = self._call("stop", timeout + SLACK_S, timeout=timeout)
            self._files = sorted(set(self._files) | set(answer["files"]))
        except MeshError as exc:
            problems.append(StopProblem("teardown_failed", tuple(self.ranks), detail=str(exc)))
        if self._link.proc is not None:  # else its death is already reported
            try:
                self._call("exit", timeout)
                if self._link.proc is not None:
                    self._link.proc.wait(timeout)
            except (MeshError, subprocess.TimeoutExpired) as exc:
                problems.append(
                    StopProblem(
                        "teardown_failed", detail=f"the Monarch helper did not shut down: {exc}"
                    )
                )
        self._kill_helper()
        # a proc still running its script ends by the mesh's stop: a normal teardown
        stopped = per_rank.exits_at_stop(self.ranks, self.exits, self._exit_info)
        if stopped:
            self.notes.append(f"ranks {stopped} were still running their script at stop")
        if self.faults_record.exists():
            self.notes.append(
                "Monarch supervision events (recorded by the helper's unhandled_fault_hook): "
                + self.faults_record.read_text(errors="replace").strip()
            )
        files = self._take_files()
        totals = dict.fromkeys(STREAMS, 0)
        for (_, stream), data in self._emitted_bytes().items():
            totals[stream] += len(data)
        problems += (
            StopProblem("backend_output", detail=text)
            for text in output_problems(self.parsed(), totals)
        )
        return StopOutcome(
            barrier=barrier, exits=dict(self.exits), tails={}, files=files,
            unconfirmed_ranks=(), problems=problems, unconfirmed_clean_exits=(),
            duration_s=time.monotonic() - start,
        )  # fmt: skip

    def _take_files(self) -> list[str]:
        """Monarch writes per-host files to /tmp/$USER/ whatever the test: move them into
        the mesh's work directory so nothing outlives the test (names kept)."""
        if not self._files:
            return []
        dest = self.workdir / "monarch-files"
        dest.mkdir(exist_ok=True)
        out = []
        for path in self._files:
            target = dest / os.path.basename(path)
            with contextlib.suppress(OSError):
                shutil.move(path, target)
            out.append(str(target))
        self.notes.append(f"Monarch wrote its per-host files as {self._files}; moved to {dest}")
        self._files = []
        return out

    def close(self) -> None:
        if self._link.proc is not None:
            self._kill_helper()
        self._link.close()
        self._take_files()
        shutil.rmtree(self._tmp, ignore_errors=True)


_CALLS = {
    "spawn": "this_host().spawn_procs() + spawn(ScriptActor) + start.call()",
    "flush": "LoggingMeshClient.flush() (the barrier ProcMesh.stop() runs)",
    "stop": "ProcMesh.stop()",
    "exit": "the helper's exit (local host shutdown)",
}
