"""The built-in catalog and the self-test, run as users run them (`pytest --meshlog`)."""

from __future__ import annotations

import pytest

from pytest_meshlog.selftest.variants import VARIANTS

QUIET = ("-p", "no:cacheprovider", "-p", "no:benchmark", "-q")


def why(result: pytest.RunResult) -> str:
    """A failed run's tail, led by where each failed mesh's evidence lies: in a run of
    hundreds of scenarios the tail alone may not reach it, and a failure that does not
    come back is investigated from that folder (kept under this test's tmp_path)."""
    lines = result.outlines
    kept = [
        "\n".join(lines[i : i + 4]) for i, line in enumerate(lines) if "evidence on disk" in line
    ]
    return "\n".join([*kept, result.stdout.str()[-5000:]])


@pytest.mark.timeout(900)
def test_catalog_is_clean_on_the_reference_stack(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        "--meshlog", "-m", "meshlog_catalog", *QUIET, timeout=600
    )
    result.stdout.fnmatch_lines(["*meshlog teardown summary*", "scenarios:*", "lines delivered:*"])
    assert "unexplained" not in result.stdout.str()
    outcomes = result.parseoutcomes()
    assert result.ret == pytest.ExitCode.OK, why(result)
    assert outcomes["passed"] >= 50


CRASH_FAMILY = "crash or kill or channel_closed or forwarder_killed"
"""The catalog's scenarios in which a rank dies or loses its channel (issue 15)."""


@pytest.mark.timeout(600)
def test_crash_scenarios_pass_at_the_strict_level_on_the_reference_stack(
    pytester: pytest.Pytester,
) -> None:
    """Issue 15: the reference stack loses nothing that reached the pipe when a child dies
    (SIGKILL included) or its channel closes early, so the crash family passes at the
    level that allows no crash loss at all."""
    result = pytester.runpytest_subprocess(
        "--meshlog", "-m", "meshlog_catalog", "-k", CRASH_FAMILY, "--meshlog-rules=strict",
        *QUIET, timeout=600,
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.OK, why(result)
    result.stdout.fnmatch_lines(["crash rules:*strict", "lost:*none"])
    assert result.parseoutcomes()["passed"] >= 16


@pytest.mark.timeout(900)
def test_selftest_catches_every_broken_variant(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        "--meshlog", "--meshlog-selftest", "-m", "meshlog_catalog", *QUIET, timeout=900
    )
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.OK, why(result)
    for variant in VARIANTS:
        result.stdout.fnmatch_lines([f"{variant} *caught (*"])
    assert "NOT CAUGHT" not in out


@pytest.mark.timeout(300)
def test_selftest_fails_when_a_variant_goes_unnoticed(pytester: pytest.Pytester) -> None:
    """The self-test's own check can fail: one scenario alone cannot catch every variant."""
    result = pytester.runpytest_subprocess(
        "--meshlog", "--meshlog-selftest", "-m", "meshlog_catalog", "-k", "env_test_has_no_files",
        *QUIET, timeout=300,
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*NOT CAUGHT by any of 1 scenarios*", "*self-test FAILED*"])


@pytest.mark.timeout(900)
def test_a_few_hundred_random_scenarios(pytester: pytest.Pytester) -> None:
    """Issue 7: a few hundred generated meshes per CI run, deterministic from the seed."""
    result = pytester.runpytest_subprocess(
        "--meshlog", "-m", "meshlog_catalog", "-k", "random", "--meshlog-random", "200",
        "-n", "2", *QUIET, timeout=900,
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.OK, why(result)
    assert result.parseoutcomes()["passed"] == 200
