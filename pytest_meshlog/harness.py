"""The `meshlog` fixture's objects: `MeshHarness` spawns meshes, `Mesh` drives one.

A test's meshes are always stopped, verified and cleaned up at teardown, also when the
test failed; everything they wrote lives in the test's own temporary directory.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from fake_procs import Barrier, Script, progress_path

from . import evidence as ev
from . import faults
from .backend import MeshClient, MeshPlan, StackBackend, not_applicable
from .markers import Expectation, Fault, MeshOptions
from .oracle import evaluate
from .report import BarrierResult, TeardownReport
from .stack import ExitInfo, MeshError, StopOutcome, StopProblem

_UNSET: Any = object()


class ClientOutput:
    """The driver client's printed output, kept in files next to the mesh's evidence."""

    def __init__(self, workdir: Path) -> None:
        self.paths = (workdir / "client.stdout", workdir / "client.stderr")
        self._files = [open(p, "ab") for p in self.paths]  # noqa: SIM115 - closed in close()

    def __call__(self, target: int, data: bytes) -> None:
        self._files[target].write(data)  # only ever called on the stack's loop thread

    def close(self) -> None:
        for f in self._files:
            f.close()

    def tail(self, target: int, limit: int = 4000) -> str:
        data = self.paths[target].read_bytes() if self.paths[target].exists() else b""
        return data[-limit:].decode("utf-8", "replace")


class Mesh:
    """One running mesh of fake children (SPEC 3.2)."""

    def __init__(
        self,
        client: MeshClient,
        scripts: tuple[Script, ...],
        *,
        options: MeshOptions,
        seed: int,
        timeout: float,
        output: ClientOutput,
        faults: tuple[Fault, ...],
        log_dir: str | None,
        stack: str,
        require: Callable[[str, str], None] | None = None,
    ) -> None:
        self._client = client
        self._require = require
        self.scripts = scripts
        self.options = options
        self.seed = seed
        self.timeout = timeout
        self.output = output
        self.faults = faults
        self.log_dir = log_dir
        self.stack = stack
        self.workdir = client.workdir
        self.barriers: list[BarrierResult] = []
        self.hostile: dict[str, str] = {}
        """What each attacked socket did to a `hostile_peer` (socket -> closed/open/...)."""
        self.outcome: StopOutcome | None = None
        self.report: TeardownReport | None = None
        self.stop_error: BaseException | None = None
        """Why `stop()` failed, if it did: the mesh is torn down regardless, and a later
        `stop()` raises this again rather than a complaint that the client is closed."""
        self._killed: set[int] = set()
        self._lock = threading.Lock()

    @property
    def ranks(self) -> list[int]:
        return list(range(len(self.scripts)))

    @property
    def stopped(self) -> bool:
        return self.outcome is not None

    @property
    def client(self) -> MeshClient:
        """The backend's client of this mesh (`LoggingMeshClient` on the reference stack),
        for what only one stack offers; everything else goes through this `Mesh`."""
        return self._client

    def _release(self) -> None:
        """Close the client and the output files (after a failed stop; idempotent)."""
        self._client.close()
        self.output.close()

    def journal(self) -> list[dict[str, Any]]:
        """The teardown journal so far: every process's events, in time order."""
        return self._client.read_journal()

    def progress(self, rank: int) -> bytes:
        """The child's own progress record (fake_procs): which steps it has reached."""
        path = Path(progress_path(self._client.record_dir, rank))
        return path.read_bytes() if path.exists() else b""

    def delivered(self, rank: int, stream: str = "stdout") -> list[bytes]:
        """Lines of that rank and stream the driver's client has received so far."""
        return list(self._client.delivered.get((rank, stream), ()))

    def flush(self, timeout: float | None = None) -> BarrierResult:
        """A barrier across every live forwarder; ends by its deadline (see `missing_ranks`)."""
        self._check_running("flush")
        if self._require is not None:
            self._require("barrier", "the test flushes the mesh (a barrier)")
        outcome = self._client.flush(self.timeout if timeout is None else timeout)
        with self._lock:
            self.barriers.append(outcome)
        return outcome

    def set_mode(self, stream_to_client: bool = True) -> None:
        """SetMode to every forwarder the client knows (a write to each connection)."""
        self._check_running("set_mode")
        set_mode = getattr(self._client, "set_mode", None)  # an optional member (architecture.md)
        if set_mode is None:
            raise NotImplementedError(
                f"stack {self.stack} cannot change a running mesh's mode (its client has no "
                "set_mode; a test can skip with meshlog.require('set_mode', why))"
            )
        window = self.options.aggregate_window_sec if stream_to_client else None
        set_mode(stream_to_client=stream_to_client, aggregate_window_sec=window)

    def wait_scripts(self, timeout: float | None = None) -> dict[int, ExitInfo]:
        """Wait until every child finished its script (crashers included)."""
        self._check_running("wait_scripts")
        try:
            return self._client.wait_children(self.timeout if timeout is None else timeout)
        except MeshError as exc:
            raise TimeoutError(
                f"{exc} (waiting for their scripts to finish; seed {self.seed})"
            ) from None

    def kill(self, rank: int, sig: int = signal.SIGKILL) -> None:
        """Signal one child from outside; a lethal signal makes its losses allowed as a crash
        (SIGSTOP/SIGCONT only pause it, e.g. to hold a barrier open)."""
        self._check_running("kill")
        if sig not in (signal.SIGSTOP, signal.SIGCONT, signal.SIGTSTP):
            self._killed.add(rank)
        self._client.kill(rank, sig, reason="killed by the test")

    def stop(self, timeout: float | None = None) -> TeardownReport:
        """Barrier, quiesce, stop, tear down; then compare everything with the scripts."""
        if self.report is not None:
            return self.report
        if self.stop_error is not None:
            raise self.stop_error
        try:
            faults.at_stop(self.faults, self)
            self.outcome = self._client.stop(self.timeout if timeout is None else timeout)
        except BaseException as exc:
            self.stop_error = exc
            raise
        finally:
            self._client.close()
            self.output.close()
        if self.outcome.barrier is not None:  # None: the backend has no barrier at all
            self.barriers.append(self.outcome.barrier)
        faulted = faults.faulted_ranks(self.faults) | frozenset(self._killed)
        evidence = ev.gather(
            self._client,
            self.scripts,
            seed=self.seed,
            prefix_with_rank=self.options.prefix_with_rank,
            stream_to_client=self.options.stream_to_client,
            aggregated=self.options.aggregate_window_sec is not None,
            files=self.outcome.files,
            barriers=self.barriers,
            faulted_ranks=faulted,
            rules=self.options.rules,
            batch_lines=getattr(self._client, "batch_lines", self.options.read_log_buffer),
        )
        problems = _judged_stop_problems(self.outcome.problems, ev.abrupt_ranks(evidence))
        self.report = evaluate(dataclasses.replace(evidence, stop_problems=problems))
        return self.report

    def _check_running(self, what: str) -> None:
        if self.outcome is not None:
            raise RuntimeError(f"mesh.{what}() after stop(): this mesh is already torn down")


def _judged_stop_problems(
    problems: Sequence[StopProblem], abrupt: frozenset[int]
) -> tuple[StopProblem, ...]:
    """The stop problems the oracle judges: an incomplete pre-stop barrier is judged from
    the mesh's barriers (it is one of them), and a rank that exited cleanly without a Bye
    is a problem only if its script did not end it abruptly (the scripts know, the stack
    does not)."""
    out: list[StopProblem] = []
    for problem in problems:
        if problem.kind == "barrier_incomplete":
            continue
        if problem.kind == "tails_unconfirmed":
            ranks = tuple(r for r in problem.ranks if r not in abrupt)
            if ranks:
                out.append(dataclasses.replace(problem, ranks=ranks))
            continue
        out.append(problem)
    return tuple(out)


class MeshHarness:
    """What the `meshlog` fixture returns: `spawn` meshes; teardown verifies them all."""

    def __init__(
        self,
        *,
        backend: StackBackend,
        options: MeshOptions,
        faults: tuple[Fault, ...],
        expect: Expectation,
        seed: int,
        procs: int,
        timeout: float,
        tmp_path: Path,
        on_report: Callable[[Mesh, TeardownReport], None] | None = None,
        env: dict[str, str] | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.backend = backend
        self.cache_dir = cache_dir  # lasts the session: see MeshPlan.cache_dir
        self.env = dict(env or {})
        self.options = options
        self.faults = faults
        self.expect = expect
        self.seed = seed
        self.procs = options.procs or procs
        self.timeout = timeout
        self.tmp_path = tmp_path
        self.on_report = on_report
        self.meshes: list[Mesh] = []
        self._reported: list[Mesh] = []
        self._failed: list[Mesh] = []

    def require(self, feature: str, why: str) -> None:
        """Skip the test, saying why, when this backend cannot provide `feature`
        (see `backend.not_applicable`): the scenario is not applicable there."""
        reason = not_applicable(self.backend, feature)
        if reason is not None:
            pytest.skip(f"not applicable on stack {self.backend.name}: {why}; {reason}")

    def spawn(
        self,
        scripts: Script | Sequence[Script],
        *,
        hosts: int | None = None,
        env: str | None = None,
        force_file_log: bool | None = None,
        prefix_with_rank: bool | None = None,
        aggregate_window_sec: float | None = _UNSET,
        read_log_buffer: int | None = None,
        stream_to_client: bool | None = None,
        log_dir: str | Path | None = None,
    ) -> Mesh:
        """Start a mesh: one child per script (a single script runs on `procs` children)."""
        if isinstance(scripts, Script):
            scripts = [scripts] * self.procs
        scripts = tuple(scripts)
        if not scripts or not all(isinstance(s, Script) for s in scripts):
            raise TypeError(
                f"spawn() needs Script objects (from the fake_procs fixture), got {scripts!r}"
            )
        changes = dict(
            hosts=hosts, env=env, force_file_log=force_file_log, prefix_with_rank=prefix_with_rank,
            read_log_buffer=read_log_buffer, stream_to_client=stream_to_client,
            aggregate_window_sec=aggregate_window_sec,
        )  # fmt: skip
        options = self._options(changes, procs=len(scripts))
        for fault in self.faults:
            self.require(faults.needs(fault), f"the test injects the {fault.kind} fault")
        self.require(f"env:{options.env}", f"the mesh runs in the {options.env} environment")
        if options.hosts > 1:
            self.require("hosts>1", f"the mesh has {options.hosts} hosts")
        if options.aggregate_window_sec is not None:
            self.require("aggregate", "the mesh aggregates similar lines")
        if self.expect.barrier == "timeout":
            self.require("barrier", "the test expects a barrier to time out")
        scripts = faults.change_scripts(self.faults, scripts)
        if any(isinstance(step, Barrier) for script in scripts for step in script.steps):
            self.require("barrier", "a script waits for a barrier's ack")
        workdir = self.tmp_path / f"meshlog-{len(self.meshes)}"
        workdir.mkdir(parents=True, exist_ok=True)
        if log_dir is None and options.env != "test":
            log_dir = workdir / "logs"
        output = ClientOutput(workdir)
        plan = MeshPlan(
            scripts=scripts, options=options, workdir=workdir,
            log_dir=None if log_dir is None else str(log_dir), sink=output, timeout=self.timeout,
            env={**self.env, **faults.host_env(self.faults)},
            client_delay=faults.client_delay(self.faults), cache_dir=self.cache_dir,
        )  # fmt: skip
        try:
            client = self.backend.launch(plan)
        except BaseException:
            output.close()
            raise
        mesh = Mesh(
            client, scripts, options=options, seed=self.seed, timeout=self.timeout, output=output,
            faults=self.faults, log_dir=plan.log_dir, stack=self.backend.name,
            require=self.require,
        )  # fmt: skip
        self.meshes.append(mesh)
        faults.after_launch(self.faults, mesh)
        return mesh

    def _options(self, changes: dict[str, Any], procs: int) -> MeshOptions:
        """The test's options with what spawn() set (None: unset; `aggregate_window_sec`
        may be set to None), validated as spawn()'s arguments."""
        given = {
            k: v
            for k, v in changes.items()
            if v is not _UNSET and (v is not None or k == "aggregate_window_sec")
        }
        return MeshOptions.from_marker(
            {**_as_kwargs(self.options), **given, "procs": procs}, source="spawn()"
        )

    def finish(self) -> list[TeardownReport]:
        """Stop and verify every mesh not yet done, each exactly once; every mesh is torn
        down even if another one's stop fails (the first failure is raised afterwards)."""
        failures: list[tuple[Mesh, BaseException]] = []
        for mesh in self.meshes:
            if mesh.report is None and mesh not in self._failed:
                try:
                    mesh.stop()
                except BaseException as exc:
                    self._failed.append(mesh)
                    failures.append((mesh, exc))
                    mesh._release()
                    continue
            if mesh.report is not None and mesh not in self._reported:
                self._reported.append(mesh)
                if self.on_report is not None:
                    self.on_report(mesh, mesh.report)
        if failures:
            failed, error = failures[0]
            index = self.meshes.index(failed)
            raise RuntimeError(
                f"stopping mesh {index} (seed {failed.seed}, stack {failed.stack}) failed: {error}"
            ) from error
        return [m.report for m in self.meshes if m.report is not None]


def _as_kwargs(options: MeshOptions) -> dict[str, Any]:
    return {k: getattr(options, k) for k in options.__dataclass_fields__}
