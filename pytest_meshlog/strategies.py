"""Hypothesis strategies for randomised teardown scenarios, and a runner for them.

* `scripts(seed=None)`: valid fake-proc `Script`s built with the fluent builder: lines,
  partial tails, raw bytes (invalid UTF-8, NUL, CR), lines around the 4096-byte cut with
  multibyte characters, small floods, interleaving, tiny sleeps, early stream closes, and
  at most one ending (exit, a crash of any kind, or a hang), always last.
* `mesh_plans()`: a `MeshPlan`, 1-4 such scripts plus the mesh settings.
* `run_plan(meshlog, plan)`: spawns the plan on a fresh harness, waits for the scripts
  (or until hanging ranks hang), stops and returns the `TeardownReport`. Inside a
  Hypothesis test it notes `to_python(plan)`, so a shrunk failure prints a paste-ready test.

```python
from hypothesis import HealthCheck, given, settings
from pytest_meshlog.strategies import mesh_plans, run_plan

@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=mesh_plans())
def test_my_stack_survives(meshlog, plan):
    run_plan(meshlog, plan).assert_clean()
```
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import currently_in_test_context, note
from hypothesis import strategies as st

from fake_procs import (
    CRASH_HOWS,
    FLAVOURS,
    MODES,
    Hang,
    Script,
    Stream,
    read_progress,
    script,
)

from .harness import Mesh, MeshHarness
from .markers import Expectation, MeshOptions
from .plan_source import to_python
from .report import TeardownReport
from .scenario_tools import poll_until

__all__ = [
    "MeshPlan",
    "mesh_plans",
    "run_plan",
    "scripts",
    "to_python",
    "wait_settled",
]

ENVS = ("local", "test", "prod")
MAX_STEPS = 8

# Raw byte fragments worth combining: line ends, CR, NUL, invalid and cut UTF-8, escapes.
_FRAGMENTS = (
    b"a",
    b"\n",
    b"\r",
    b"\r\n",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\xc3\xa9",
    b"\xe2\x82",
    b"\xe2\x82\xac",
    b"\xf0\x9d\x84",
    b"\xf0\x9d\x84\x9e",
    b"\xed\xa0\x80",
    b"\x1b[31m",
    b"hello world",
)
_WIDE = ("a", "\u00e9", "\u20ac", "\U0001d11e")  # 1, 2, 3 and 4 bytes in UTF-8
_SLEEPS = (0.0, 0.001, 0.005, 0.02)
_WINDOWS = (None, None, None, 0.05, 0.1, 0.25)  # aggregated in half the plans

# Step kinds, simplest first (Hypothesis shrinks towards the front).
_KINDS = ("line", "partial", "raw", "long", "flood", "interleave", "sleep", "flush", "close")
_ENDINGS = ("none", "none", "none", "exit", "crash", "crash", "hang")

_text = st.text(st.characters(codec="utf-8", exclude_characters="\n"), max_size=24)
_raw = st.lists(st.sampled_from(_FRAGMENTS) | st.binary(max_size=6), max_size=8).map(b"".join)


@st.composite
def _long_text(draw: st.DrawFn) -> str:
    """Text of 4096 +- 12 bytes: ASCII padding, then 1- to 4-byte characters to the end."""
    target = draw(st.integers(4096 - 12, 4096 + 12))
    wide = draw(st.sampled_from(_WIDE))
    width = len(wide.encode())
    pad = draw(st.integers(0, 3)) + target % width
    count = max(0, (target - pad) // width)
    return "x" * pad + wide * count


@st.composite
def _script(draw: st.DrawFn, seed: int | None, max_steps: int) -> Script:
    s = script(
        draw(st.integers(0, 2**32 - 1)) if seed is None else seed,
        flavour=draw(st.sampled_from(FLAVOURS)),
    )
    open_streams: list[Stream] = ["stdout", "stderr"]
    for _ in range(draw(st.integers(0, max_steps))):
        kinds = [k for k in _KINDS if open_streams or k in ("sleep", "flush")]
        if len(open_streams) < 2:
            kinds = [k for k in kinds if k != "interleave"]
        kind = draw(st.sampled_from(kinds))
        if kind == "sleep":
            s = s.sleep(draw(st.sampled_from(_SLEEPS)))
            continue
        if kind == "flush":
            s = s.flush(draw(st.sampled_from([None, *open_streams])))
            continue
        stream = draw(st.sampled_from(open_streams))
        mode = draw(st.sampled_from(MODES))
        if kind == "line":
            text = draw(st.none() | _text)
            s = s.line(text, stream=stream, mode=mode, tag=draw(st.booleans()))
        elif kind == "partial":
            text = draw(st.none() | _text)
            s = s.partial(text, stream=stream, mode=mode, tag=draw(st.booleans()))
        elif kind == "raw":
            s = s.raw(draw(_raw), stream=stream, mode=mode, tag=draw(st.booleans()))
        elif kind == "long":
            text = draw(_long_text())
            how = draw(st.sampled_from(("line", "partial", "raw")))
            if how == "raw":
                s = s.raw(text.encode() + b"\n", stream=stream, mode=mode)
            elif how == "partial":
                s = s.partial(text, stream=stream, mode=mode)
            else:
                s = s.line(text, stream=stream, mode=mode)
        elif kind == "flood":
            if draw(st.booleans()):
                s = s.flood(draw(st.integers(0, 300)), draw(st.integers(1, 200)), stream=stream)
            else:  # a few lines right around the cut
                n, size = draw(st.integers(1, 3)), draw(st.integers(4090, 4102))
                s = s.flood(n, size, stream=stream, mode=mode)
        elif kind == "interleave":
            width = draw(st.none() | st.integers(1, 120))
            s = s.interleave(draw(st.integers(0, 100)), line_bytes=width, mode=mode)
        else:  # close
            s = s.close(stream)
            open_streams.remove(stream)
    ending = draw(st.sampled_from(_ENDINGS))
    if ending == "exit":
        s = s.exit(draw(st.sampled_from((0, 1, 3, 255))))  # os._exit: abrupt even with 0
    elif ending == "crash":
        s = s.crash(draw(st.sampled_from(CRASH_HOWS)))
    elif ending == "hang":
        s = s.hang()
    return s


def scripts(seed: int | None = None, *, max_steps: int = MAX_STEPS) -> st.SearchStrategy[Script]:
    """Valid fake-proc scripts. `seed`: the script's content seed (drawn when None)."""
    return _script(seed, max_steps)


# -- mesh plans -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeshPlan:
    """One randomised scenario: a script per rank plus the mesh settings of `spawn()`."""

    scripts: tuple[Script, ...]
    hosts: int = 1
    env: str = "local"
    force_file_log: bool = False
    aggregate_window_sec: float | None = None
    read_log_buffer: int = 100
    prefix_with_rank: bool = True

    def spawn_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `meshlog.spawn(plan.scripts, **...)`."""
        return {
            "hosts": self.hosts,
            "env": self.env,
            "force_file_log": self.force_file_log,
            "aggregate_window_sec": self.aggregate_window_sec,
            "read_log_buffer": self.read_log_buffer,
            "prefix_with_rank": self.prefix_with_rank,
        }

    @property
    def hanging_ranks(self) -> tuple[int, ...]:
        return tuple(
            r for r, s in enumerate(self.scripts) if s.steps and isinstance(s.steps[-1], Hang)
        )

    def to_dict(self) -> dict[str, Any]:
        return {"scripts": [s.to_dict() for s in self.scripts], **self.spawn_kwargs()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MeshPlan:
        rest = {k: v for k, v in data.items() if k != "scripts"}
        return cls(scripts=tuple(Script.from_dict(s) for s in data["scripts"]), **rest)

    @classmethod
    def from_spawn(cls, scripts: Sequence[Script], **kwargs: Any) -> MeshPlan:
        return cls(scripts=tuple(scripts), **kwargs)

    def __repr__(self) -> str:
        steps = "; ".join(",".join(s.kind for s in sc.steps) or "-" for sc in self.scripts)
        settings = ", ".join(f"{k}={v!r}" for k, v in self.spawn_kwargs().items())
        return f"MeshPlan({len(self.scripts)} scripts [{steps}], {settings})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # Hypothesis's printer
        p.text(repr(self))


@st.composite
def _mesh_plan(
    draw: st.DrawFn, max_children: int, max_steps: int, prefix_with_rank: bool | None
) -> MeshPlan:
    children = draw(st.integers(1, max_children))
    return MeshPlan(
        scripts=tuple(draw(scripts(max_steps=max_steps)) for _ in range(children)),
        hosts=draw(st.integers(1, min(2, children))),
        env=draw(st.sampled_from(ENVS)),
        force_file_log=draw(st.booleans()),
        aggregate_window_sec=draw(st.sampled_from(_WINDOWS)),
        read_log_buffer=draw(st.integers(1, 200)),
        prefix_with_rank=draw(st.booleans()) if prefix_with_rank is None else prefix_with_rank,
    )


def mesh_plans(
    *, max_children: int = 4, max_steps: int = MAX_STEPS, prefix_with_rank: bool | None = None
) -> st.SearchStrategy[MeshPlan]:
    """Meshes of 1..`max_children` generated scripts on 1-2 hosts, with random settings
    (`prefix_with_rank`: fixed when given, drawn when None)."""
    return _mesh_plan(max_children, max_steps, prefix_with_rank)


# -- running a plan ---------------------------------------------------------------------------


def wait_settled(mesh: Mesh, timeout: float | None = None) -> None:
    """Wait for every script to end; ranks whose script hangs only until they hang."""
    hanging = {r for r, s in enumerate(mesh.scripts) if isinstance(s.end, Hang)}
    if not hanging:
        mesh.wait_scripts(timeout)
        return

    def pending() -> list[int]:
        waiting = []
        for rank in mesh.ranks:
            progress = read_progress(mesh.progress(rank))
            if rank in hanging:
                done = any(e.startswith("hang") for e in progress.events)
            else:
                done = progress.ending is not None
            if not done:
                waiting.append(rank)
        return waiting

    poll_until(
        lambda: not pending(),
        mesh.timeout if timeout is None else timeout,
        what=lambda: (
            f"ranks {pending()} to reach the end (or hang) of their scripts (seed {mesh.seed})"
        ),
    )


def run_plan(meshlog: MeshHarness, plan: MeshPlan, *, seed: int | None = None) -> TeardownReport:
    """Spawn `plan` on a fresh harness (the stack, seed, timeout and environment of
    `meshlog`; not its markers), wait until it settles, stop it and return the report.

    The mesh is stopped inside this call, also when waiting fails. Its working directory
    is removed when the report is clean and kept (under the test's tmp_path) otherwise.
    Inside a Hypothesis test the plan is noted as paste-ready Python (`to_python`).
    `seed`: the seed the report names (default: `meshlog.seed`).
    """
    if currently_in_test_context():
        note(to_python(plan))
    workdir = Path(tempfile.mkdtemp(prefix="plan-", dir=meshlog.tmp_path))
    harness = MeshHarness(
        backend=meshlog.backend,
        options=MeshOptions(),
        faults=(),
        expect=Expectation(),
        seed=meshlog.seed if seed is None else seed,
        procs=len(plan.scripts),
        timeout=meshlog.timeout,
        tmp_path=workdir,
        env=meshlog.env,
        cache_dir=meshlog.cache_dir,
    )
    try:
        mesh = harness.spawn(plan.scripts, **plan.spawn_kwargs())
        wait_settled(mesh)
    finally:
        harness.finish()  # stops (exactly once) whatever was spawned
    report = mesh.report
    assert report is not None
    if not report.problems():
        shutil.rmtree(workdir, ignore_errors=True)
    return report
