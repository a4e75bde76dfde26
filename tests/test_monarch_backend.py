"""The `monarch` backend: output parsing, the usage error, and the whole catalog on
Monarch compared with the outcomes recorded in tests/monarch_expected.json.

The catalog test runs a real Monarch (PyPI torchmonarch, the `monarch` extra) in a pytest
subprocess; a scenario whose outcome differs from the recorded one fails it with a diff,
so a change in Monarch or in the oracle shows up here and not as noise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fake_procs import FakeProcs
from pytest_meshlog.backend import MeshPlan
from pytest_meshlog.markers import MeshOptions
from pytest_meshlog.monarch import MonarchBackend, missing
from pytest_meshlog.monarch.client import SLACK_S
from pytest_meshlog.monarch.output import Parsed, output_problems, parse_output

from .foreign_catalog import run_and_compare

EXPECTED = Path(__file__).with_name("monarch_expected.json")
MESH = "ml42n0"


def _prefix(rank: int) -> bytes:
    proc = f"{MESH}-{rank}<aBc{rank}>"
    return f"[vm {proc}@{proc}.ipc://@QwErTy] ".encode()


def _parse(tmp_path: Path, out: bytes, err: bytes = b"", aggregated: bool = False) -> Parsed:
    paths = (tmp_path / "client.stdout", tmp_path / "client.stderr")
    paths[0].write_bytes(out)
    paths[1].write_bytes(err)
    return parse_output(
        paths, MESH, [0, 1], aggregated=aggregated, emitted=lambda: {(0, "stdout"): 2}
    )


def test_client_lines_are_attributed_by_monarchs_proc_label(tmp_path: Path) -> None:
    out = (
        b"<r0o0> raw console line\n"
        b"partial" + _prefix(1) + b"[1] <r1o0> one\n" + _prefix(0) + b"[0] <r0o0> zero\n"
    )
    parsed = _parse(tmp_path, out)
    assert parsed.delivered[1, "stdout"] == [b"[1] <r1o0> one"]
    assert parsed.delivered[0, "stdout"] == [b"[0] <r0o0> zero"]
    assert parsed.console["stdout"] == b"<r0o0> raw console line\npartial"
    assert parsed.unattributed == []


def test_lines_of_another_rank_or_mesh_are_reported_not_dropped(tmp_path: Path) -> None:
    stray = f"[vm {MESH}-7<x>@{MESH}-7<x>.ipc://@a] lost soul\n".encode()
    parsed = _parse(tmp_path, stray)
    problems = output_problems(parsed, {"stdout": 0, "stderr": 0})
    assert parsed.unattributed == [("stdout", stray[:-1])]
    assert "could not be attributed" in problems[0]


def test_aggregate_blocks_count_per_stream(tmp_path: Path) -> None:
    block = (
        b"\x1b[36m>>> Aggregated Logs (2026-11-26 09:00:00) >>>\x1b[0m\n"
        b"\x1b[33m[3 similar log lines]\x1b[0m [0] worker step 1 finished\n"
        b"\x1b[36m<<< Aggregated Logs (2026-11-26 09:00:01) <<<\x1b[0m\n\n"
    )
    parsed = _parse(tmp_path, block, aggregated=True)
    # rank 0 emitted 2: it is credited 2, and the surplus row goes to rank 0 too
    assert len(parsed.delivered[0, "stdout"]) == 3
    assert parsed.delivered[1, "stdout"] == []
    assert parsed.console["stdout"] == b""


def test_console_tee_is_compared_per_stream(tmp_path: Path) -> None:
    parsed = _parse(tmp_path, b"abc\n", b"Monarch internal logs are being written to /x\n")
    assert output_problems(parsed, {"stdout": 4, "stderr": 0}) == []
    assert "got 4 bytes" in output_problems(parsed, {"stdout": 5, "stderr": 0})[0]


def test_the_plugin_never_imports_monarch() -> None:
    code = (
        "import sys, pytest_meshlog.plugin, pytest_meshlog.monarch, pytest_meshlog.monarch.plugin;"
        "sys.exit('monarch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.skipif(missing() is None, reason="Monarch is installed here")
def test_without_monarch_the_stack_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--meshlog-stack=monarch", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--meshlog-stack=monarch*pip install 'pytest-meshlog?monarch?'*"])


@pytest.mark.skipif(missing() is not None, reason=f"Monarch cannot run here: {missing()}")
def test_a_monarch_call_that_never_returns_is_reported_and_cleaned_up(tmp_path: Path) -> None:
    """The helper is frozen (SIGSTOP) so Monarch's flush cannot answer: the call is
    named with its wait, the helper and Monarch's procs are killed, nothing is left."""
    plan = MeshPlan(
        scripts=(FakeProcs(seed=1).hanger(),), options=MeshOptions(procs=1),
        workdir=tmp_path, log_dir=None, sink=lambda target, data: None, timeout=10.0,
    )  # fmt: skip
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    client = MonarchBackend().launch(plan)
    try:
        assert client.helper_pid is not None
        os.kill(client.helper_pid, signal.SIGSTOP)
        start = time.monotonic()
        outcome = client.flush(timeout=1.0)
        assert time.monotonic() - start < 1.0 + SLACK_S + 3
        assert outcome.status == "timeout" and outcome.missing_ranks == (0,)
        assert "did not return after" in client.notes[-1], client.notes
        assert client.helper_pid is None  # killed, with everything below it
        problems = client.stop(timeout=5.0).problems
        assert any(
            p.kind == "teardown_failed" and "ProcMesh.stop() was never called" in p.message
            for p in problems
        ), problems
    finally:
        client.close()
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not left


@pytest.mark.timeout(600)
@pytest.mark.skipif(missing() is not None, reason=f"Monarch cannot run here: {missing()}")
def test_monarch_catalog_matches_the_recorded_outcomes(pytester: pytest.Pytester) -> None:
    run_and_compare(pytester, "monarch", EXPECTED, "-n", "2")
