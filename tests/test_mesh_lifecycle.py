"""A LoggingMeshClient's life is an explicit state machine (stack.lifecycle): every call
is checked against the state, and one in the wrong state is a clear error naming both,
never a hang, a KeyError or a call into a closed loop (issue 12, item 6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_meshlog.stack import LoggingMeshClient, MeshError, StackConfig

from .stack_helpers import Captured, child, mesh

pytestmark = pytest.mark.timeout(120)


def test_the_states_of_a_mesh_in_order(tmp_path: Path) -> None:
    with mesh(tmp_path, [child("lines")]) as m:
        outcome = m.stop(10)
        assert m.stop(10) is outcome  # once stopped, the same outcome again
        with pytest.raises(
            MeshError, match=r"LoggingMeshClient.flush\(\) called in state 'closed'"
        ):
            m.flush(1.0)
        with pytest.raises(MeshError, match=r"kill\(\) called in state 'closed'"):
            m.kill(0)
        assert m.state == "closed"  # stop tears down: closed after stopped


def test_a_second_spawn_names_the_state(tmp_path: Path) -> None:
    with mesh(tmp_path, [child("hang")]) as m, pytest.raises(MeshError) as err:
        m.spawn([child("hang")])
    assert "spawn() called in state 'running'; it is allowed only in 'new'" in str(err.value)


def test_calls_before_spawn_and_after_close_are_refused(tmp_path: Path) -> None:
    client = LoggingMeshClient(
        StackConfig(enable_log_forwarding=True), workdir=tmp_path / "m", sink=Captured()
    )
    try:
        for call in (
            lambda: client.kill(0),
            lambda: client.inject(0, "break_files"),
            lambda: client.flush(1.0),
            lambda: client.wait_children(1.0),
            lambda: client.set_mode(stream_to_client=False),
        ):
            with pytest.raises(MeshError, match="called in state 'new'"):
                call()
        assert client.state == "new"
    finally:
        client.close()
    assert client.state == "closed"
    client.close()  # idempotent
    with pytest.raises(MeshError, match=r"stop\(\) called in state 'closed'"):
        client.stop(1.0)
    with pytest.raises(MeshError, match=r"spawn\(\) called in state 'closed'"):
        client.spawn([child("lines")])


def test_a_failed_spawn_can_still_be_stopped(tmp_path: Path) -> None:
    """A child that cannot start: spawn fails (naming why), the state says so, and stop
    tears down what did start."""
    client = LoggingMeshClient(
        StackConfig(enable_log_forwarding=True), workdir=tmp_path / "m", sink=Captured()
    )
    try:
        bad = child("lines")
        with pytest.raises(MeshError):
            client.spawn([bad], timeout=0.001)  # no host is ready within a millisecond
        assert client.state == "spawn_failed"
        client.stop(5.0)
        assert client.state == "closed"
    finally:
        client.close()
