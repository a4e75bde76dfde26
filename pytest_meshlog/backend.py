"""Stack backends: what `--meshlog-stack NAME` selects, and the reference one.

A backend turns a `MeshPlan` (scripts plus mesh settings) into a running mesh the
harness can flush, stop and read evidence from. Other backends arrive through the
`pytest_meshlog_make_stack` hook; `reference` is this repository's stack.

This module is the public backend contract (README "Writing a backend"): `StackBackend`,
`MeshClient`, `FileGate`, `MeshPlan`, `FEATURES`, `not_applicable`, and the result types a
client returns (`BarrierOutcome`, `ExitInfo`, `StopOutcome`, `StopProblem`, `MeshError`),
re-exported here so that a backend imports nothing else of pytest-meshlog.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fake_procs import Script

from .markers import MeshOptions
from .stack import (
    BarrierOutcome,
    ChildSpec,
    ExitInfo,
    LoggingMeshClient,
    MeshError,
    StackConfig,
    StopOutcome,
    StopProblem,
)
from .stack.client import Sink
from .stack.patches import PATCH_ENV

__all__ = [
    "FEATURES",
    "BarrierOutcome",
    "ExitInfo",
    "FileGate",
    "MeshClient",
    "MeshError",
    "MeshPlan",
    "ReferenceBackend",
    "Sink",
    "StackBackend",
    "StopOutcome",
    "StopProblem",
    "not_applicable",
]

FEATURES = {
    "barrier": "mesh.flush(): a barrier (SPEC 1.11); without it stop() runs no pre-stop "
    "barrier and the oracle does not ask for one (the client says `has_barrier = False`)",
    "journal": "the teardown journal (EOF, Flush(None), barrier events); without it the "
    "client says `has_journal = False` and the journal rules are not checked",
    "aggregate": "aggregation of similar lines (a mesh with aggregate_window_sec)",
    "set_mode": "changing a running mesh's mode (mesh.set_mode)",
    "file_gate": "the environment's rule for per-proc files (HYPERACTOR_FORCE_FILE_LOG, "
    "Env::Local/Prod): the env_* scenarios check it",
    "hosts>1": "a mesh on more than one host",
    "env:<name>": "a mesh in environment <name> (local, prod, test): asked for every mesh",
    "fault:<kind>": "a test's meshlog_fault of that kind (see pytest_meshlog.faults.FAULTS)",
}
"""The features a test can need, by the name `StackBackend.unsupported` is asked about."""


@dataclass(frozen=True)
class MeshPlan:
    """Everything a backend needs to start one mesh."""

    scripts: tuple[Script, ...]
    options: MeshOptions
    workdir: Path
    log_dir: str | None
    sink: Sink
    timeout: float
    env: Mapping[str, str] = field(default_factory=dict)
    client_delay: float = 0.0  # the slow_client fault: seconds the client spends per batch
    cache_dir: Path | None = None
    """A folder that lasts the session (in pytest's temp dir), for what a backend may keep
    between meshes; the reference stack keeps its hosts' compiled modules there."""


class FileGate(Protocol):
    def file_log_gate(self) -> str | None:
        """Why per-proc files are off, or None when the stack writes them."""
        ...


class MeshClient(Protocol):
    """What the harness and the evidence use of a running mesh (`LoggingMeshClient` for
    the reference stack). A backend that cannot observe the journal returns none and says
    so with `has_journal = False` (read with getattr: the reference client predates it).

    A client may also say how many lines one batch of its stack holds, `batch_lines: int |
    None` (read with getattr; absent: the plan's `read_log_buffer`; None: unknown). The
    oracle's literal crash rule allows a crashed rank to lose at most that many lines at
    the end of each client stream (SPEC 1.5: "the very last batch"); with None it cannot
    tell batches apart and allows the whole lost tail."""

    @property
    def workdir(self) -> Path: ...
    @property
    def record_dir(self) -> str | os.PathLike[str]: ...
    @property
    def config(self) -> FileGate: ...
    @property
    def exits(self) -> Mapping[int, ExitInfo]: ...
    @property
    def delivered(self) -> Mapping[tuple[int, str], Sequence[bytes]]: ...
    def read_journal(self) -> list[dict[str, Any]]: ...
    def flush(self, timeout: float = ...) -> BarrierOutcome: ...
    def wait_children(self, timeout: float) -> dict[int, ExitInfo]: ...
    def kill(self, rank: int, sig: int = ..., reason: str = ...) -> object: ...
    def inject(self, rank: int, what: str, *args: Any) -> None: ...
    def stop(self, timeout: float = ...) -> StopOutcome: ...
    def close(self) -> None: ...

    # What each member means (the evidence reads them after `stop`):
    # workdir      the mesh's folder (the harness made it; everything of the mesh goes there)
    # record_dir   where each child's fake_procs progress record is (`rank<r>.progress`):
    #              what the children wrote is replayed from it, never taken from the stack
    # config       `file_log_gate()`: why there are no per-proc files, or None
    # exits        rank -> ExitInfo(code, signal, killed_by_stack) once known
    # delivered    (rank, "stdout"|"stderr") -> the lines the client received, in order,
    #              without newline; the rank from the runtime's own label, never the line
    # read_journal the journal's events ([] without one: then `has_journal = False`)
    # flush        a barrier; bounded by `timeout` (never called when "barrier" is
    #              unsupported: the test is skipped); wait_children: until every child
    #              ended, else MeshError naming the ranks; kill: a signal to one child;
    #              inject: a fault hook (MeshError when there is none)
    # stop         the runtime's own end of a job, bounded by `timeout`; its StopOutcome's
    #              `files` are the per-proc files (`*.stdout` / `*.stderr`), `barrier` the
    #              pre-stop barrier (None without one), `problems` what went wrong
    # close        ends every process and removes every temp dir it started (idempotent)


class StackBackend(Protocol):
    """What `pytest_meshlog_make_stack` returns. A backend may also define
    `unsupported(feature) -> str | None`: why it cannot provide `feature` (a name of
    `FEATURES`), or None; a test that needs it is skipped with that reason printed."""

    name: str

    def launch(self, plan: MeshPlan) -> MeshClient:
        """Start the mesh and its children; raise with a clear message on failure."""
        ...


def not_applicable(backend: StackBackend, feature: str) -> str | None:
    """Why `feature` cannot run on this backend, or None (see `FEATURES`)."""
    check = getattr(backend, "unsupported", None)
    return None if check is None else check(feature)


class ReferenceBackend:
    """The stack in `pytest_meshlog.stack`, optionally with a broken variant applied."""

    def __init__(self, variant: str | None = None, *, spare_host: bool = False) -> None:
        self.variant = variant
        self.spare_host = spare_host  # opt-in (--meshlog-spare-host): a warm host outlives tests
        self.name = "reference" if variant is None else f"reference+{variant}"

    def launch(self, plan: MeshPlan) -> LoggingMeshClient:
        opts = plan.options
        config = StackConfig(
            read_log_buffer=opts.read_log_buffer,
            force_file_log=opts.force_file_log,
            prefix_with_rank=opts.prefix_with_rank,
            enable_log_forwarding=True,
            env=opts.env,
            log_dir=plan.log_dir,
        )
        env = dict(plan.env)
        if self.variant is not None:  # the host and child halves of the broken variant
            from .selftest.variants import PATCH, VARIANT_ENV

            env.update({VARIANT_ENV: self.variant, PATCH_ENV: PATCH})
        scripts_dir = plan.workdir / "scripts"
        scripts_dir.mkdir(parents=True, exist_ok=True)
        children = []
        for rank, script in enumerate(plan.scripts):
            path = scripts_dir / f"rank{rank}.json"
            script.write(path)
            children.append(ChildSpec(Script.child_argv(path)))
        client = LoggingMeshClient(
            config,
            workdir=plan.workdir,
            hosts=opts.hosts,
            aggregate_window_sec=opts.aggregate_window_sec,
            stream_to_client=opts.stream_to_client,
            sink=plan.sink,
            extra_env=env,
            consume_delay=plan.client_delay,
            spare_host=self.spare_host,
            bytecode_cache=None if plan.cache_dir is None else plan.cache_dir / "bytecode",
        )
        try:
            if self.variant is not None:
                from .selftest.variants import apply_to_driver

                apply_to_driver(self.variant, client)  # the driver half, this instance only
            client.spawn(children, timeout=plan.timeout)
        except BaseException:
            client.close()
            raise
        return client
