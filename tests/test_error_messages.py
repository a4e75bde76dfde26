"""Errors name what the user wrote: the call, the argument and the value."""

from __future__ import annotations

import pytest

from fake_procs import FakeProcs, ScriptError
from pytest_meshlog.harness import MeshHarness
from tests.test_plugin import run_inline


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda f: f.crasher(how="sigfoo"), "crasher(how='sigfoo'): must be one of exit, sigkill"),
        (lambda f: f.crasher(after_lines=-1), "crasher: after_lines=-1 must be an integer >= 0"),
        (lambda f: f.flooder(lines="x"), "flooder(lines='x'): must be an integer"),
        (lambda f: f.flooder(line_bytes=0), "flooder(line_bytes=0): must be in 1.."),
        (lambda f: f.flooder(stream="stdin"), "flooder(stream='stdin'): must be one of stdout"),
        (lambda f: f.long_liner(nbytes=-5), "long_liner(nbytes=-5): must be in 1.."),
        (lambda f: f.slow_drip(interval=-1), "slow_drip(interval=-1): must be finite and >= 0"),
        (lambda f: f.partial_line_writer(tail=5), "partial_line_writer(tail=5): must be a str"),
        (lambda f: f.interleaver(mode="pipe"), "interleaver(mode='pipe'): must be one of fd"),
    ],
)
def test_a_ready_made_script_names_its_own_parameter(
    fake_procs: FakeProcs, build: object, message: str
) -> None:
    with pytest.raises(ScriptError) as info:
        build(fake_procs)  # type: ignore[operator]
    assert message in str(info.value)
    assert "step " not in str(info.value)  # no step number the user never wrote


def test_a_built_script_still_names_its_step(fake_procs: FakeProcs) -> None:
    with pytest.raises(ScriptError, match=r"step 1 \(crash\): how='x' must be one of"):
        fake_procs.script().line().crash("x")  # type: ignore[arg-type]


def test_a_bad_spawn_argument_names_spawn_not_a_marker(
    meshlog: MeshHarness, fake_procs: FakeProcs
) -> None:
    with pytest.raises(ValueError, match=r"^spawn\(\): env='staging' is not one of local"):
        meshlog.spawn(fake_procs.silent(), env="staging")
    with pytest.raises(
        ValueError, match=r"^spawn\(\): read_log_buffer=0 must be an int from 1 to 10000"
    ):
        meshlog.spawn(fake_procs.silent(), read_log_buffer=0)
    with pytest.raises(ValueError, match=r"^spawn\(\): read_log_buffer=10001 must be an int from"):
        meshlog.spawn(fake_procs.silent(), read_log_buffer=10_001)
    assert meshlog.meshes == []  # nothing was started


def test_an_unknown_broken_variant_lists_the_variants(pytester: pytest.Pytester) -> None:
    result = run_inline(pytester, "--meshlog", "--meshlog-stack=reference+nosuch")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*no broken variant 'nosuch' of the reference stack (variants: *partial_line_dropped*"]
    )


def test_random_scenarios_without_the_catalog_are_a_usage_error(pytester: pytest.Pytester) -> None:
    result = run_inline(pytester, "--meshlog-random", "3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--meshlog-random=3 adds scenarios to the catalog*add --meshlog"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-o", "meshlog=maybe"), "ini meshlog='maybe' is not a boolean*"),
        (("--meshlog", "-o", "meshlog_selftest=sure"), "ini meshlog_selftest='sure' is not a*"),
        (("-o", "meshlog_leak_check=2"), "ini meshlog_leak_check='2' is not a boolean*"),
        (("-o", "meshlog_timeout=soon"), "ini meshlog_timeout='soon' is not a number"),
        (("--meshlog-prefix-with-rank", "yes please"), "--meshlog-prefix-with-rank='yes please'*"),
    ],
)
def test_a_bad_ini_value_names_its_key(
    pytester: pytest.Pytester, args: tuple[str, ...], message: str
) -> None:
    result = run_inline(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
