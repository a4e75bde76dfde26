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
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from fake_procs import emitted, expected_lines, progress_path, read_progress

from ..backend import MeshPlan
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
_CRASH_SIGNALS = {
    "sigkill": int(signal.SIGKILL),
    "sigsegv": int(signal.SIGSEGV),
    "abort": int(signal.SIGABRT),
}
_PAUSE = (signal.SIGSTOP, signal.SIGCONT, signal.SIGTSTP)


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
        self._lock = threading.Lock()
        self._version = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._reply: Any = None
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
        scripts_dir.mkdir(parents=True, exist_ok=True)
        Path(self.record_dir).mkdir(parents=True, exist_ok=True)
        for rank, script in enumerate(plan.scripts):
            script.write(scripts_dir / f"rank{rank}.json")
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
        read_fd, write_fd = os.pipe()
        try:
            with open(self.output_paths[0], "ab") as out, open(self.output_paths[1], "ab") as err:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", HELPER, str(plan_path), str(write_fd)],
                    stdin=subprocess.PIPE, stdout=out, stderr=err, pass_fds=(write_fd,),
                    env=env, cwd=plan.workdir, start_new_session=True,
                )  # fmt: skip
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self._reply = os.fdopen(read_fd, "rb")
        answer = self._call("spawn", START_S, timeout=plan.timeout)
        self.pids = {int(r): int(p) for r, p in answer["pids"].items()}
        self._files = list(answer["files"])
        self._watch_descendants()

    def _call(self, cmd: str, wait: float, **args: Any) -> dict[str, Any]:
        """One command; its answer, or MeshError naming the Monarch call and the wait."""
        what = _CALLS.get(cmd, cmd)
        with self._lock:
            proc = self._proc
            if proc is None or proc.stdin is None:
                raise MeshError(f"{what} was never called: the Monarch helper had exited")
            start = time.monotonic()
            try:
                proc.stdin.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())
                proc.stdin.flush()
            except OSError as exc:
                raise MeshError(f"the Monarch helper is gone ({what}: {exc})") from None
            line = self._readline(wait)
            took = time.monotonic() - start
        if not line:  # b"": the helper closed its end (it is exiting); None: no answer in time
            code = None
            if line is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = proc.wait(5)
            self._kill_helper()
            if line is not None:
                raise MeshError(
                    f"the Monarch helper exited ({code}) during {what} after {took:.1f}s"
                )
            raise MeshError(f"Monarch call {what} did not return after {took:.1f}s")
        answer: dict[str, Any] = json.loads(line)
        if answer.get("fatal"):  # the driver is ending: later calls are never made
            self._kill_helper()
        if not answer.get("ok"):
            raise MeshError(f"Monarch call {what} failed after {took:.1f}s: {answer.get('error')}")
        return answer

    def _readline(self, wait: float) -> bytes | None:
        """One answer line; b"" when the helper closed the pipe, None after `wait`."""
        deadline = time.monotonic() + wait
        with selectors.DefaultSelector() as sel:
            sel.register(self._reply, selectors.EVENT_READ)
            buf = b""
            while time.monotonic() < deadline:
                if not sel.select(max(0.0, deadline - time.monotonic())):
                    continue
                chunk = os.read(self._reply.fileno(), 65536)
                if not chunk:
                    return b""
                buf += chunk
                if buf.endswith(b"\n"):
                    return buf
        return None

    def _watch_descendants(self) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(psutil.Error):
            self._descendants.update(psutil.Process(self._proc.pid).children(recursive=True))

    def _kill_helper(self) -> None:
        """Kill the helper and everything below it (Monarch's procs included)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(psutil.Error):
            self._descendants.update(psutil.Process(proc.pid).children(recursive=True))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        for child in self._descendants:
            with contextlib.suppress(psutil.Error):
                child.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        psutil.wait_procs(list(self._descendants), timeout=5)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    @property
    def helper_pid(self) -> int | None:
        """The helper process (Monarch's driver side), while it runs."""
        return None if self._proc is None else self._proc.pid

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
        out: dict[tuple[int, Stream], bytes] = {}
        for rank in self.ranks:
            record = Path(progress_path(self.record_dir, rank))
            if record.exists():
                em = emitted(self._scripts[rank], rank, record)
                for stream in STREAMS:
                    out[rank, stream] = em.streams[stream]
        return out

    def _emitted(self) -> dict[tuple[int, str], int]:
        return {
            key: len(expected_lines(data, rank=key[0], prefix_with_rank=self.prefix_with_rank))
            for key, data in self._emitted_bytes().items()
        }

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
        if sig not in _PAUSE:
            self._killed[rank] = int(sig)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pids[rank], sig)

    def inject(self, rank: int, what: str, *args: Any) -> None:
        raise MeshError(f"fault {what!r} cannot be injected into a Monarch mesh")

    def wait_children(self, timeout: float) -> dict[int, ExitInfo]:
        """Until every proc's script has ended (its proc may live on until stop)."""
        deadline = time.monotonic() + timeout
        while True:
            infos = {r: self._exit_info(r) for r in self.ranks}
            if all(info is not None for info in infos.values()):
                done = {r: info for r, info in infos.items() if info is not None}
                self.exits.update(done)
                return done
            if time.monotonic() > deadline:
                missing = [r for r, info in infos.items() if info is None]
                raise MeshError(f"ranks {missing} still running after {timeout:.1f}s")
            time.sleep(0.01)

    def _exit_info(self, rank: int) -> ExitInfo | None:
        """How a rank ended, from its progress record, its pid and the test's kills: a
        script that ended leaves its proc alive (Monarch procs outlive their actors' work)."""
        record = Path(progress_path(self.record_dir, rank))
        progress = read_progress(record.read_bytes()) if record.exists() else None
        alive = self._alive(rank)
        if rank in self._killed and not alive:
            return ExitInfo(None, self._killed[rank])
        ending = progress.ending if progress is not None else None
        if ending in ("end", "stop"):
            return ExitInfo(0, None)
        if ending in ("exit", "crash") and not alive:
            last = (progress.last_event or "").split() if progress is not None else []
            if ending == "exit":
                return ExitInfo(int(last[-1]) if last else 1, None)
            how = last[-1] if last else "sigkill"
            return ExitInfo(1, None) if how == "exit" else ExitInfo(None, _CRASH_SIGNALS[how])
        if not alive:
            return ExitInfo(None, None, killed_by_stack="the proc died without saying how")
        return None

    def _alive(self, rank: int) -> bool:
        pid = self.pids.get(rank)
        if pid is None:
            return False
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

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
        if self._proc is not None:  # else its death is already reported
            try:
                self._call("exit", timeout)
                if self._proc is not None:
                    self._proc.wait(timeout)
            except (MeshError, subprocess.TimeoutExpired) as exc:
                problems.append(
                    StopProblem(
                        "teardown_failed", detail=f"the Monarch helper did not shut down: {exc}"
                    )
                )
        self._kill_helper()
        stopped = [r for r in self.ranks if self.exits.get(r) is None]
        for rank in self.ranks:
            info = self._exit_info(rank)
            # a proc still running its script ends by the mesh's stop: a normal teardown
            self.exits[rank] = info if info is not None else ExitInfo(0, None)
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
        if self._proc is not None:
            self._kill_helper()
        if self._reply is not None:
            self._reply.close()
            self._reply = None
        self._take_files()
        shutil.rmtree(self._tmp, ignore_errors=True)


_CALLS = {
    "spawn": "this_host().spawn_procs() + spawn(ScriptActor) + start.call()",
    "flush": "LoggingMeshClient.flush() (the barrier ProcMesh.stop() runs)",
    "stop": "ProcMesh.stop()",
    "exit": "the helper's exit (local host shutdown)",
}
