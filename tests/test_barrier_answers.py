"""A barrier's answer names every rank of the mesh: acked, missing, or not waited for and why."""

from __future__ import annotations

from fake_procs import FakeProcs
from pytest_meshlog.harness import MeshHarness


def test_flush_after_every_child_exited_says_why_none_was_waited_for(
    meshlog: MeshHarness, fake_procs: FakeProcs
) -> None:
    mesh = meshlog.spawn([fake_procs.partial_line_writer(lines=3)] * 2)
    mesh.wait_scripts()
    result = mesh.flush(timeout=5)
    assert result.completed and result.acked_ranks == () and result.missing_ranks == ()
    assert result.not_waited == {0: "exited", 1: "exited"}
    mesh.stop().assert_clean()
