"""The per-proc file rules on real meshes: a host's journaled write errors explain losses in
its own files only, never in another host's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fake_procs import FakeProcs, script
from pytest_meshlog.backend import ReferenceBackend
from pytest_meshlog.harness import MeshHarness
from pytest_meshlog.markers import Expectation, MeshOptions
from pytest_meshlog.report import RULE_FILE_ERROR
from pytest_meshlog.scenario_tools import barrier_states, journal_events, poll_until
from pytest_meshlog.stack import Ev

pytestmark = pytest.mark.timeout(120)


def file_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n")


@pytest.mark.meshlog_expect(lost_at_most=20)  # rank 1's lines, cut from host1's file by hand
def test_a_write_error_on_one_host_does_not_excuse_another_hosts_file(
    meshlog: MeshHarness, fake_procs: FakeProcs, tmp_path: Path
) -> None:
    """host0's file writes fail (journaled); host1's file loses rank 1's lines without any
    error (truncated by hand). Only rank 0's file losses are `file-write-error`; rank 1's
    are unexplained."""
    logs = tmp_path / "logs"
    rank0 = fake_procs.script().barrier(timeout=60).line().line().line()
    rank1 = fake_procs.script()
    for _ in range(20):
        rank1 = rank1.line()
    mesh = meshlog.spawn([rank0, rank1], env="prod", hosts=2, log_dir=logs)
    assert mesh._client.host_of == {0: 0, 1: 1}
    mesh._client.inject(0, "break_files")  # host0 only: from now on its file writes fail
    poll_until(lambda: bool(journal_events(mesh, Ev.FILE_APPENDER_REDIRECTED)), what="host0")
    while barrier_states(mesh, 2)[0] != "passed":  # rank 0 writes only after host0 broke
        mesh.flush(5)
    (host1_stdout,) = logs.glob("*_host1_*.stdout")
    poll_until(lambda: file_lines(host1_stdout) == 20, what="rank 1's 20 lines in host1's file")
    os.truncate(host1_stdout, 0)  # a loss host1 never journals
    mesh.wait_scripts()
    poll_until(
        lambda: any(e["src"] == "host0" for e in journal_events(mesh, Ev.FILE_WRITE_ERROR)),
        what="host0's file write error",
    )
    report = mesh.stop()
    errors = {(e["src"], e["stream"]) for e in mesh.journal() if e["ev"] == Ev.FILE_WRITE_ERROR}
    assert errors == {("host0", "stdout")}
    lost = {(x.rank, x.rule) for x in report.lost if x.where == "file"}
    assert lost == {(0, RULE_FILE_ERROR), (1, None)}, report.lost
    assert len([x for x in report.lost if x.rank == 1 and x.rule is None]) == 20


def test_a_per_proc_file_removed_mid_run_is_named_not_read_as_empty(tmp_path: Path) -> None:
    """A file removed before the mesh is judged was read as empty: each of its lines was
    "never reached the per-proc file", with no word of why. (A harness of its own: the
    `meshlog` fixture would fail this test on the finding it asserts.)"""
    logs = tmp_path / "logs"
    harness = MeshHarness(
        backend=ReferenceBackend(), options=MeshOptions(env="prod"),
        faults=(), expect=Expectation(), seed=7, procs=1, timeout=60, tmp_path=tmp_path,
    )  # fmt: skip
    mesh = harness.spawn([script().line().line().line()], log_dir=logs)
    mesh.wait_scripts()
    (stdout,) = logs.glob("*.stdout")
    poll_until(lambda: file_lines(stdout) == 3, what="the 3 lines in the stdout file")
    stdout.unlink()
    report = mesh.stop()
    gone = [f.message for f in report.findings if f.kind == "files"]
    assert gone == [
        f"the per-proc file {stdout} is gone: created, then removed before the mesh was "
        "judged (was its log dir deleted?), so none of its lines can be checked"
    ]
