"""The plugin under pytest-xdist: catalog and user tests on workers, one summary on the
controller (real sessions in a subprocess through `pytester`)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from tests.test_plugin import BASE_ARGS, assert_no_leftovers, stdout_text

pytest.importorskip("xdist")
pytestmark = pytest.mark.timeout(180)


def run_xdist(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*BASE_ARGS, "-n", "2", *args, timeout=150)


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_catalog_under_xdist_summary_once_on_controller(pytester: pytest.Pytester) -> None:
    result = run_xdist(
        pytester, "--meshlog", "-k", "happy_path or interleaved", "--meshlog-report", "out.html"
    )
    result.assert_outcomes(passed=4)
    assert result.ret == pytest.ExitCode.OK
    text = stdout_text(result)
    assert "2 workers [4 items]" in text
    # the workers print nothing of their own: exactly one summary, from the controller
    assert text.count("meshlog teardown summary") == 1, text
    assert text.count("meshlog HTML report: out.html") == 1, text
    result.stdout.fnmatch_lines(
        [
            "*= meshlog teardown summary =*",
            "scenarios:*4 (4 passed)",
            "stack:*reference",
            "lines delivered:*",
            "lost:*none",
            "barriers:*4 (4 completed)",
        ]
    )
    # happy_path and interleaved_streams, each on 1 and 2 children
    assert re.search(r"^children:\s+6$", text, re.M), text
    emitted = re.search(r"^lines emitted:\s+([\d,]+)$", text, re.M)
    delivered = re.search(r"^lines delivered:\s+([\d,]+)$", text, re.M)
    assert emitted and delivered and emitted.group(1) == delivered.group(1), text

    # the controller writes the report from what the workers sent
    parser = _Text()
    parser.feed((pytester.path / "out.html").read_text(encoding="utf-8"))
    parser.close()
    page = "".join(parser.text)
    for nodeid in (
        "meshlog::test_happy_path[procs=1]",
        "meshlog::test_happy_path[procs=2]",
        "meshlog::test_interleaved_streams[procs=1]",
        "meshlog::test_interleaved_streams[procs=2]",
    ):
        assert nodeid in page, nodeid
    assert_no_leftovers(pytester)


USER_TESTS = """
import signal
import pytest


@pytest.mark.parametrize("lines", [1, 5, 9])
def test_partial_lines(meshlog, fake_procs, lines):
    mesh = meshlog.spawn(fake_procs.partial_line_writer(lines=lines))
    mesh.wait_scripts()
    report = mesh.stop()
    assert [report.stream(r, "stdout").delivered for r in mesh.ranks] == [lines + 1] * 2
    report.assert_clean()


@pytest.mark.meshlog(procs=3, env="prod")
def test_files(meshlog, fake_procs):
    mesh = meshlog.spawn(fake_procs.interleaver(lines=8))
    mesh.wait_scripts()
    assert len(mesh.stop().files) == 2


@pytest.mark.meshlog_fault("crash", rank=1, after_lines=1, how="sigkill")
def test_crash(meshlog, fake_procs):
    mesh = meshlog.spawn(fake_procs.partial_line_writer(lines=4))
    assert mesh.wait_scripts()[1].signal == signal.SIGKILL
    report = mesh.stop()
    assert report.unexplained == ()


def test_plain(fake_procs):
    assert fake_procs.script().line("x").to_json()
"""


def test_user_fixtures_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = run_xdist(pytester, "--meshlog-seed", "5")
    result.assert_outcomes(passed=6)
    # without --meshlog, no summary (and no catalog) also under xdist
    assert "meshlog teardown summary" not in stdout_text(result)
    assert "2 workers [6 items]" in stdout_text(result)
    assert_no_leftovers(pytester)


def test_unclean_teardown_reported_from_a_worker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        def test_partial(meshlog, fake_procs):
            mesh = meshlog.spawn(fake_procs.partial_line_writer(lines=2, tail="tail-x"))
            mesh.wait_scripts()

        def test_other(meshlog, fake_procs):
            mesh = meshlog.spawn(fake_procs.silent())
            mesh.wait_scripts()
        """
    )
    result = run_xdist(
        pytester, "--meshlog-stack", "reference+partial_line_dropped", "--meshlog-seed", "77"
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*meshlog teardown is not clean*(seed 77; rerun with --meshlog-seed 77)*",
            "*'[[]0] tail-x' (lost)*",
        ]
    )
    assert_no_leftovers(pytester)
