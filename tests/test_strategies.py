"""Randomised teardown scenarios: the Hypothesis strategies, `to_python`, `run_plan`, and
`--meshlog-random N` (including a shrunk failure printed as a paste-ready test)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from fake_procs import Close, Crash, Exit, FakeProcs, Hang, Script
from pytest_meshlog import strategies
from pytest_meshlog.harness import MeshHarness
from pytest_meshlog.strategies import MeshPlan, mesh_plans, run_plan, scripts, to_python

from .test_plugin import run_sub

FAST = settings(max_examples=60, deadline=None, database=None)


@FAST
@given(s=scripts())
def test_generated_scripts_are_valid_and_round_trip(s: Script) -> None:
    assert Script.from_json(s.to_json()) == s
    assert Script(s.steps, seed=s.seed, flavour=s.flavour) == s  # passes validation again
    for step in s.steps[:-1]:
        assert not isinstance(step, (Exit, Crash, Hang))  # endings come last
    closed = {step.stream for step in s.steps if isinstance(step, Close)}
    assert len(closed) == sum(isinstance(step, Close) for step in s.steps)


@FAST
@given(s=scripts(seed=7))
def test_a_given_seed_is_kept(s: Script) -> None:
    assert s.seed == 7


@FAST
@given(plan=mesh_plans())
def test_plans_round_trip_through_json(plan: MeshPlan) -> None:
    assert 1 <= len(plan.scripts) <= 4 and 1 <= plan.hosts <= min(2, len(plan.scripts))
    assert 1 <= plan.read_log_buffer <= 200 and plan.env in ("local", "test", "prod")
    assert MeshPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


class _Recorder:
    """Stands in for the `meshlog` fixture: records what the pasted test spawns."""

    def __init__(self) -> None:
        self.plan: MeshPlan | None = None
        self.scripts: tuple[Script, ...] = ()
        self.timeout = 1.0
        self.seed = 0

    def spawn(self, scripts: list[Script], **kwargs: Any) -> _Recorder:
        self.plan = MeshPlan.from_spawn(scripts, **kwargs)
        self.scripts = tuple(scripts)
        return self

    def wait_scripts(self) -> None:
        pass

    @property
    def ranks(self) -> list[int]:
        return list(range(len(self.scripts)))

    def progress(self, rank: int) -> bytes:
        return b"hang 0\n" if self.scripts[rank].steps[-1:] == (Hang(),) else b"end 0\n"

    def stop(self) -> Any:
        return type("Report", (), {"assert_clean": lambda self: None})()


@FAST
@given(plan=mesh_plans())
def test_to_python_rebuilds_an_equal_plan(plan: MeshPlan) -> None:
    source = to_python(plan)
    namespace: dict[str, Any] = {}
    exec(compile(source, "<to_python>", "exec"), namespace)
    recorder = _Recorder()
    namespace["test_meshlog_repro"](recorder, FakeProcs(seed=123))
    assert recorder.plan == plan, source


def test_to_python_reads_well() -> None:
    s = Script(seed=3).line("x" * 4000 + "\u20ac" * 40, stream="stderr").raw(b"\xff\x00\r\n")
    plan = MeshPlan(scripts=(s.crash("abort"), Script(seed=4).hang()), hosts=2, env="prod")
    source = to_python(plan, name="test_found")
    assert source.startswith("from pytest_meshlog.strategies import wait_settled\n")
    assert "def test_found(meshlog, fake_procs):" in source
    assert ".line('x' * 4000 + '€' * 40, stream='stderr')" in source
    assert ".raw(b'\\xff\\x00\\r\\n')" in source and ".crash('abort')" in source
    long_raw = to_python(MeshPlan(scripts=(Script().raw(("é" * 40 + "\n").encode()),)))
    assert ".raw(('é' * 40 + '\\n').encode())" in long_raw
    assert "wait_settled(mesh)" in source and "hosts=2, env='prod'" in source


def test_long_lines_straddle_the_cut() -> None:
    sizes: list[int] = []

    @settings(max_examples=200, deadline=None, database=None)
    @given(s=scripts())
    def collect(s: Script) -> None:
        for step in s.steps:
            text = getattr(step, "text", None) or getattr(step, "data", b"")
            size = len(text.encode() if isinstance(text, str) else text)
            if size > 4000:
                sizes.append(size)

    collect()
    assert any(n < 4096 for n in sizes) and any(n > 4096 for n in sizes), sizes


# -- through the real reference stack ---------------------------------------------------------


@settings(
    max_examples=20,
    deadline=None,
    database=None,
    derandomize=True,  # the same 20 plans every run: the suite stays deterministic
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(plan=mesh_plans())
def test_random_plans_tear_down_clean(meshlog: MeshHarness, plan: MeshPlan) -> None:
    """The README's pattern: a fresh mesh per example, stopped inside `run_plan`."""
    report = run_plan(meshlog, plan)
    report.assert_clean()
    assert not meshlog.meshes  # run_plan's own harness: nothing left for the fixture


# -- --meshlog-random through real pytest sessions --------------------------------------------


def test_meshlog_random_items(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\n")
    result = run_sub(pytester, "--meshlog", "-m", "meshlog_catalog", "-k", "random",
                     "--meshlog-random", "5", "-v")  # fmt: skip
    result.assert_outcomes(passed=5)
    for i in range(5):
        result.stdout.fnmatch_lines([f"*meshlog::test_random[[]{i}[]] PASSED*"])


def test_meshlog_random_must_not_be_negative(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("-p", "no:cacheprovider", "--meshlog-random", "-1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--meshlog-random=-1 must be at least 0*"])


@pytest.mark.timeout(420)  # Hypothesis shrinks through many meshes: 95-170 s on a loaded machine
def test_a_broken_stack_shrinks_to_a_paste_ready_test(pytester: pytest.Pytester) -> None:
    """On a tee that drops the final partial line, a random scenario fails, shrinks, and
    prints a test; pasted into a file, that test fails on the broken stack and passes on
    the reference stack."""
    pytester.makeini("[pytest]\n")
    broken = ("--meshlog-stack", "reference+partial_line_dropped")
    result = run_sub(pytester, "--meshlog", "-m", "meshlog_catalog", "-k", "random",
                     "--meshlog-random", "1", *broken, timeout=300)  # fmt: skip
    result.assert_outcomes(failed=1)
    text = "\n".join(result.outlines)
    assert "final partial line" in text
    start = next(i for i, ln in enumerate(result.outlines) if "def test_meshlog_repro(" in ln)
    snippet = []
    for line in result.outlines[start:]:
        m = re.match(r"E {7}(.*)$", line)
        if m is None:
            break
        snippet.append(m.group(1))
    source = "\n".join(snippet) + "\n"
    assert ".partial(" in source and "mesh.stop().assert_clean()" in source, source
    assert len(source.splitlines()) < 20, source  # shrunk
    pytester.makepyfile(test_pasted=source)
    pasted = run_sub(pytester, "test_pasted.py", *broken)
    assert pasted.parseoutcomes().get("failed") == 1  # (the fixture's teardown errors too)
    pasted.stdout.fnmatch_lines(["*the final partial line*"])
    run_sub(pytester, "test_pasted.py").assert_outcomes(passed=1)


def test_strategies_module_exports() -> None:
    assert set(strategies.__all__) >= {"mesh_plans", "run_plan", "scripts", "to_python"}


def test_identical_untagged_file_lines_of_two_ranks(
    meshlog: MeshHarness, fake_procs: FakeProcs
) -> None:
    """Found by --meshlog-random: without the rank prefix, two ranks on one host writing
    the same untagged line must each be credited with one copy in the file."""
    scripts = [
        fake_procs.script(seed=0, flavour="ascii").line("Story then plan.") for _ in range(2)
    ]
    mesh = meshlog.spawn(scripts, env="prod", read_log_buffer=1, prefix_with_rank=False)
    mesh.wait_scripts()
    mesh.stop().assert_clean()


def test_exit_zero_is_abrupt(meshlog: MeshHarness, fake_procs: FakeProcs) -> None:
    """Found by --meshlog-random: an `exit(0)` step is os._exit(0), no quiesce; its losses
    are the crash rule's, not unexplained, and it owes no Bye."""
    mesh = meshlog.spawn([fake_procs.script().flood(500, 40).partial().exit(0)], env="prod")
    mesh.wait_scripts()
    report = mesh.stop()
    report.assert_clean()
    assert all(loss.rule == "crash-last-batch" for loss in report.lost)
