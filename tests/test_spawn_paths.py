"""The two start-up shortcuts: the warm spare host, and the channel bound before the child."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from fake_procs import Script, script
from pytest_meshlog.stack import ChildSpec, LoggingMeshClient, StackConfig, spare
from pytest_meshlog.stack.channel import LISTEN_FD_ENV, adopt_listener, listen

CONFIG = StackConfig(enable_log_forwarding=True)


@pytest.fixture(autouse=True)
def no_spare_left() -> Iterator[None]:
    spare.discard()
    yield
    spare.discard()
    assert spare.reserved() == (set(), set())


def _run_mesh(
    tmp_path: Path, name: str, *, spare_host: bool = False, extra_env: dict[str, str] | None = None
) -> LoggingMeshClient:
    """A two-child mesh that writes, stops and closes; returns the closed client."""
    path = tmp_path / f"{name}.json"
    script(1).line("one").partial("tail").write(path)
    specs = [ChildSpec(Script.child_argv(path)) for _ in range(2)]
    with LoggingMeshClient(
        CONFIG,
        workdir=tmp_path / name,
        sink=lambda t, d: None,
        spare_host=spare_host,
        extra_env=extra_env,
    ) as mesh:
        mesh.spawn(specs)
        mesh.wait_children(30)  # the scripts end by themselves (a stop could pre-empt them)
        mesh.stop(30)
    for rank in range(2):
        assert mesh.delivered[(rank, "stdout")] == [
            f"[{rank}] {t}".encode() for t in ("one", "tail")
        ]
    return mesh


def _host_pids(mesh: LoggingMeshClient) -> list[int]:
    return [e["pid"] for e in mesh.read_journal() if e["ev"] == "host_started"]


def test_the_next_mesh_takes_the_warm_host_and_tears_down_clean(tmp_path: Path) -> None:
    first = _run_mesh(tmp_path, "first", spare_host=True)
    pids, fds = spare.reserved()
    assert len(pids) == 1 and len(fds) == 1, "closing a spare_host mesh leaves one warm host"
    (waiting,) = pids
    assert waiting not in _host_pids(first)
    second = _run_mesh(tmp_path, "second", spare_host=True)
    assert _host_pids(second) == [waiting], "the second mesh ran on the warm host"
    assert not psutil.pid_exists(waiting) or psutil.Process(waiting).status() == "zombie"


def test_a_spare_started_under_other_startup_variables_is_dropped(tmp_path: Path) -> None:
    _run_mesh(tmp_path, "first", spare_host=True)
    (waiting,) = spare.reserved()[0]
    other = _run_mesh(tmp_path, "other", spare_host=True, extra_env={"PYTHONHASHSEED": "7"})
    assert waiting not in _host_pids(other), "PYTHON* is read at start-up: no reuse"
    assert not psutil.pid_exists(waiting) or psutil.Process(waiting).status() == "zombie"


def test_without_opting_in_no_host_is_left_behind(tmp_path: Path) -> None:
    _run_mesh(tmp_path, "plain")
    assert spare.reserved() == (set(), set())


def test_a_dropped_spare_exits_without_a_mesh() -> None:
    spare.start(sys.executable, os.environ)
    (pid,) = spare.reserved()[0]
    proc = psutil.Process(pid)
    assert spare.discard() == 0, "it read EOF instead of a mesh and left by itself"
    assert not proc.is_running() or proc.status() == "zombie"


def test_the_inherited_listener_is_adopted_only_for_its_own_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "c0.sock")
    listener = listen(path)
    try:
        monkeypatch.setenv(LISTEN_FD_ENV, str(listener.fileno()))
        assert adopt_listener(str(tmp_path / "other.sock")) is None
        assert LISTEN_FD_ENV not in os.environ, "consumed: a grandchild never sees it"
        os.fstat(listener.fileno())  # a refused fd is left open for its owner
        monkeypatch.setenv(LISTEN_FD_ENV, str(listener.fileno()))
        adopted = adopt_listener(path)
        assert adopted is not None and adopted.fileno() == listener.fileno()
        adopted.detach()
    finally:
        listener.close()


def test_a_pipe_is_never_taken_for_the_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    r, w = os.pipe()
    try:
        monkeypatch.setenv(LISTEN_FD_ENV, str(r))
        assert adopt_listener("/nonexistent/c0.sock") is None
        os.fstat(r)
    finally:
        os.close(r)
        os.close(w)


def test_a_connection_made_before_the_child_serves_is_not_lost(tmp_path: Path) -> None:
    """What the bootstrap relies on: dialing the bound socket succeeds at once, and the
    server that adopts the socket later still accepts that connection."""
    path = str(tmp_path / "c1.sock")
    listener = listen(path)
    early = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    early.connect(path)
    early.sendall(b"hello")
    conn, _ = listener.accept()
    assert conn.recv(5) == b"hello"
    for s in (conn, early, listener):
        s.close()


def test_a_forked_child_has_exactly_its_own_environment() -> None:
    """What a forked child's Python code and the programs it execs see is the child's
    environment, not the host's: variables only the host has are gone, changed ones
    changed, new ones there (a real fork, then `env` exec'd from it). Variables set under
    os.environ's feet (readline, which pytest imports, sets LINES and COLUMNS) are not
    the forked child's to know of: they stay, as in any fork."""
    from pytest_meshlog.stack.forkserver import _adopt_environ

    under_feet = {k: v for k, v in _env_of_an_exec().items() if k not in os.environ}

    os.environ["MESHLOG_TEST_HOST_ONLY"] = "host"
    os.environ["MESHLOG_TEST_CHANGED"] = "before"
    try:
        want = {k: v for k, v in os.environ.items() if k != "MESHLOG_TEST_HOST_ONLY"}
        want |= {"MESHLOG_TEST_CHANGED": "after", "MESHLOG_TEST_NEW": "new"}
        seen_r, seen_w = os.pipe()
        exec_r, exec_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child)
            try:
                _adopt_environ(want)
                os.write(seen_w, "\0".join(f"{k}={v}" for k, v in os.environ.items()).encode())
                os.dup2(exec_w, 1)
                os.execv("/usr/bin/env", ["env", "-0"])
            finally:
                os._exit(1)
        os.close(seen_w)
        os.close(exec_w)
        seen, execd = (_read_all(fd).decode() for fd in (seen_r, exec_r))
        assert os.waitpid(pid, 0)[1] == 0
    finally:
        os.environ.pop("MESHLOG_TEST_HOST_ONLY", None)
        os.environ.pop("MESHLOG_TEST_CHANGED", None)
    assert _parse_env(seen) == want
    assert _parse_env(execd) == want | under_feet


def _env_of_an_exec() -> dict[str, str]:
    out = subprocess.run(["/usr/bin/env", "-0"], capture_output=True, check=True, env=None)
    return _parse_env(out.stdout.decode())


def _parse_env(nul_separated: str) -> dict[str, str]:
    return dict(v.split("=", 1) for v in nul_separated.strip("\0").split("\0"))


def _read_all(fd: int) -> bytes:
    chunks = []
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(65536):
            chunks.append(chunk)
    return b"".join(chunks)
