"""The backend contract, public API only: a conftest plugs a small stack of its own
(children on plain pipes, read by the driver's threads, no files) into `pytest --meshlog`
through `pytest_meshlog_make_stack`, and the catalog judges it.

The conftest is tests/backend_contract_conftest.py (the README shows the same one). It
imports nothing but `pytest_meshlog.backend` and `fake_procs`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .foreign_catalog import outcomes

CONFTEST = Path(__file__).with_name("backend_contract_conftest.py")
ITEMS = {
    "meshlog::test_happy_path[procs=2]": "passed",
    "meshlog::test_interleaved_streams[procs=2]": "passed",
    "meshlog::test_partial_last_line_both_streams[procs=2]": "passed",
    "meshlog::test_crash_mid_batch[procs=2-sigkill]": "passed",
    "meshlog::test_barrier_between_phases[procs=2]": "skipped",
    "meshlog::test_silent_child[procs=2]": "skipped",
    "meshlog::test_aggregation_counts[procs=2]": "skipped",
    "meshlog::test_disk_full[procs=2]": "skipped",
}


def _run(pytester: pytest.Pytester) -> tuple[dict[str, str], str]:
    pytester.makeconftest(CONFTEST.read_text())
    junit = pytester.path / "pipes.xml"
    result = pytester.runpytest_subprocess(
        "--meshlog", "--meshlog-stack=pipes", "--meshlog-procs=2", "-p", "no:cacheprovider",
        "-p", "no:randomly", "-rs", f"--junitxml={junit}", *ITEMS, timeout=240,
    )  # fmt: skip
    return outcomes(junit), result.stdout.str()


def test_the_example_conftest_uses_only_the_public_contract() -> None:
    tree = ast.parse(CONFTEST.read_text())
    modules = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module is not None
    }
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mine = {m for m in modules if m.startswith("pytest_meshlog")}
    assert mine == {"pytest_meshlog.backend"}, mine


def test_a_stack_of_its_own_is_judged_by_the_catalog(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIPE_STACK_LOSSY", raising=False)
    got, out = _run(pytester)
    assert got == ITEMS, out
    # each skip says what the stack lacks, as its unsupported() put it
    for reason in ("no flush", "no journal", "no aggregation", "no fault hooks"):
        assert "not applicable on stack pipes: " in out and reason in out, out


def test_a_lossy_version_of_that_stack_is_caught(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same stack forgetting each stream's last line: every item it runs fails."""
    monkeypatch.setenv("PIPE_STACK_LOSSY", "1")
    got, out = _run(pytester)
    ran = {k: v for k, v in got.items() if ITEMS[k] == "passed"}
    assert set(ran.values()) == {"failed"}, out
    assert "never reached the client, unexplained" in out, out
    assert "other problems:" not in out and "lines emitted:    0" not in out, out


FAILING_STOP = '''

class FailingStopClient(PipeClient):
    """A runtime whose stop fails, and refuses to be stopped twice."""

    stops = 0

    def stop(self, timeout=15.0):
        FailingStopClient.stops += 1
        self.close()
        if FailingStopClient.stops > 1:
            raise MeshError("stop() called again on a closed client")
        raise MeshError("the runtime did not answer stop")


class FailingStopBackend(PipeBackend):
    name = "failing-stop"

    def launch(self, plan):
        return FailingStopClient(plan)


def pytest_meshlog_make_stack(config, name):
    return FailingStopBackend() if name == "failing-stop" else None
'''


def test_a_stop_that_failed_is_reported_as_it_failed_and_never_retried(
    pytester: pytest.Pytester,
) -> None:
    """The test's own `stop()` fails: the report (and the fixture's check) says why, and
    the harness does not stop the mesh a second time, which on a closed client only
    complains that it is closed."""
    pytester.makeconftest(
        CONFTEST.read_text().split("def pytest_meshlog_make_stack")[0] + FAILING_STOP
    )
    pytester.makepyfile(
        """
        def test_stops(meshlog, fake_procs):
            mesh = meshlog.spawn([fake_procs.script().line()])
            mesh.wait_scripts()
            mesh.stop()
        """
    )
    result = pytester.runpytest_subprocess(
        "--meshlog-stack=failing-stop", "-p", "no:cacheprovider", "-p", "no:randomly", timeout=120
    )
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "MeshError: the runtime did not answer stop" in out
    assert "stopping the meshes failed" in out
    assert "failed: the runtime did not answer stop" in out
    assert "MeshError: stop() called again" not in out, out
    assert "failed: stop() called again" not in out, out
