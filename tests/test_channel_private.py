"""The channel is private (issue 7): 0700 socket directories, peer credentials checked on
every accepted connection, bad frames rejected; none of it takes the forwarder or the
client down, and the mesh still delivers everything.

How another user is simulated: the tests run as root, so a helper process drops to
uid/gid 65534 (nobody) before it execs a small Python script that dials the socket. The
0700 directory alone keeps that process out (EACCES at connect): the first line of
defence, tested as it is. To reach the second line, the peer-credential check, the test
then opens the directory (0711) and the socket file (0777) for a moment, exactly the
misconfiguration the check is there for, and shows the connection is refused.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pytest_meshlog.stack import LoggingMeshClient, wire
from pytest_meshlog.stack.channel import PRIVATE_DIRS
from pytest_meshlog.stack.journal import Event

from .stack_helpers import child, events, mesh, wait_delivered

NOBODY = 65534

# Runs as the other user: dial, send the payload, report what the server did.
HELPER = r"""
import errno, socket, sys
path, payload = sys.argv[1], bytes.fromhex(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(path)
except OSError as e:
    print("connect-error", errno.errorcode.get(e.errno, e.errno))
    sys.exit(0)
try:
    s.sendall(payload)
    print("closed" if s.recv(65536) == b"" else "data")
except (ConnectionResetError, BrokenPipeError):
    print("closed")
except socket.timeout:
    print("open")
"""


def _drop_to_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _interpreter_for_nobody() -> str | None:
    """A Python the other user may run (ours may live in root's home, out of its reach)."""
    if os.getuid() != 0:
        return None
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if not os.path.exists(candidate):
            continue
        try:
            probe = subprocess.run(
                [candidate, "-I", "-S", "-c", "import os; print(os.getuid())"],
                preexec_fn=_drop_to_nobody, capture_output=True, text=True, timeout=20,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0 and probe.stdout.strip() == str(NOBODY):
            return candidate
    return None


@pytest.fixture(scope="module")
def nobody_python() -> str:
    python = _interpreter_for_nobody()
    if python is None:
        pytest.skip("needs root and a Python interpreter that uid 65534 may execute")
    return python


def as_nobody(python: str, path: str, payload: bytes) -> tuple[int, str]:
    """(pid, what happened) for one connection attempt by uid 65534."""
    proc = subprocess.Popen(
        [python, "-I", "-S", "-c", HELPER, path, payload.hex()],
        preexec_fn=_drop_to_nobody, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return proc.pid, out.strip()


def send_raw(path: str, data: bytes) -> str:
    """Dial as ourselves, send raw bytes, report whether the server closed the connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        try:
            s.sendall(data)
            return "closed" if s.recv(65536) == b"" else "data"
        except (ConnectionResetError, BrokenPipeError):
            return "closed"


def wait_events(m: LoggingMeshClient, name: str, n: int, **match: Any) -> list[Event]:
    deadline = time.monotonic() + 15
    while True:
        got = events(m, name, **match)
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.01)


@contextmanager
def opened_up(sockdir: str, sockets: list[str]) -> Iterator[None]:
    """For a moment: the directory searchable (0711), the sockets writable, by anyone."""
    modes = {p: stat.S_IMODE(os.stat(p).st_mode) for p in [sockdir, *sockets]}
    try:
        os.chmod(sockdir, 0o711)
        for p in sockets:
            os.chmod(p, 0o777)
        yield
    finally:
        for p, mode in modes.items():
            os.chmod(p, mode)


def assert_delivered_everything(m: LoggingMeshClient) -> None:
    """rank 0 ran `hang`, rank 1 ran `lines 3`: exactly those lines, nothing injected."""
    for stream in ("stdout", "stderr"):  # rank 1 ends by itself: a stop must not pre-empt it
        wait_delivered(m, 1, stream, 4)
    outcome = m.stop(20)
    assert outcome.problems == []
    assert outcome.barrier.completed
    assert m.delivered[(0, "stdout")] == [b"[0] hanging", b"[0] partial"]
    assert m.delivered[(1, "stdout")] == [f"[1] out 1 {i}".encode() for i in range(3)] + [
        b"[1] tail-out"
    ]
    assert m.delivered[(1, "stderr")] == [f"[1] err 1 {i}".encode() for i in range(3)] + [
        b"[1] tail-err"
    ]
    assert set(m.delivered) <= {(0, "stdout"), (0, "stderr"), (1, "stdout"), (1, "stderr")}
    assert outcome.unconfirmed_ranks == ()


def running_mesh(tmp_path: Path) -> Any:
    return mesh(tmp_path, [child("hang"), child("lines", 3)])


def test_socket_directory_is_0700_and_owned_by_us(tmp_path: Path) -> None:
    with running_mesh(tmp_path) as m:
        wait_delivered(m, 0, "stdout", 1)
        st = os.stat(m.sockdir)
        assert stat.S_IMODE(st.st_mode) == 0o700
        assert st.st_uid == os.getuid()
        assert os.path.exists(os.path.join(m.sockdir, "client.sock"))
        assert os.path.exists(os.path.join(m.sockdir, "c0.sock"))
        made = [d for d in PRIVATE_DIRS if d.path == m.sockdir]
        assert made and made[0].pid == os.getpid() and "LoggingMeshClient" in made[0].creator
        assert_delivered_everything(m)


def test_another_user_is_kept_out_by_the_directory_then_refused_by_peer_credentials(
    tmp_path: Path, nobody_python: str
) -> None:
    hello = wire.encode(
        (wire.HELLO, "forwarder", {"rank": 7, "hostname": "evil", "proc_id": "p", "pid": 1})
    )
    inject_client = hello + wire.encode((wire.LOG, "evil", "p", 0, [b"injected"]))
    inject_fwd = wire.encode((wire.LOG, "host0", "proc[0]", 0, [b"[0] injected"]))
    with running_mesh(tmp_path) as m:
        wait_delivered(m, 0, "stdout", 1)
        client_sock = os.path.join(m.sockdir, "client.sock")
        fwd_sock = os.path.join(m.sockdir, "c0.sock")
        # 1. the 0700 directory: the other user cannot even reach the sockets
        assert as_nobody(nobody_python, client_sock, inject_client)[1] == "connect-error EACCES"
        assert as_nobody(nobody_python, fwd_sock, inject_fwd)[1] == "connect-error EACCES"
        # 2. with the directory opened up, the peer-credential check refuses the connection
        with opened_up(m.sockdir, [client_sock, fwd_sock]):
            pid_c, got_c = as_nobody(nobody_python, client_sock, inject_client)
            pid_f, got_f = as_nobody(nobody_python, fwd_sock, inject_fwd)
        assert (got_c, got_f) == ("closed", "closed")
        refused = wait_events(m, "connection_refused", 2)
        by_where = {e["where"]: e for e in refused}
        assert by_where["client"]["peer_uid"] == NOBODY
        assert by_where["client"]["peer_pid"] == pid_c
        assert by_where["client"]["src"] == "driver"
        assert by_where["forwarder_channel"]["peer_uid"] == NOBODY
        assert by_where["forwarder_channel"]["peer_pid"] == pid_f
        assert by_where["forwarder_channel"]["src"] == "rank0"
        assert stat.S_IMODE(os.stat(m.sockdir).st_mode) == 0o700  # restored
        assert m.flush(10).completed  # neither the client nor the forwarder went down
        assert_delivered_everything(m)
        assert events(m, "forwarder_connected", rank=7) == []


BAD_FRAMES = {
    "garbage": struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1",  # 0xc1: never valid msgpack
    "oversized": struct.pack(">I", wire.MAX_FRAME + 1) + b"x" * 16,
    "not-an-array": wire.frame(b"\x2a"),  # msgpack 42
}


@pytest.mark.parametrize("target", ["client", "forwarder_channel"])
def test_bad_frames_are_rejected_and_the_mesh_delivers_everything(
    tmp_path: Path, target: str
) -> None:
    with running_mesh(tmp_path) as m:
        wait_delivered(m, 0, "stdout", 1)
        path = os.path.join(m.sockdir, "client.sock" if target == "client" else "c0.sock")
        for data in BAD_FRAMES.values():
            assert send_raw(path, data) == "closed"
        rejected = wait_events(m, "frame_rejected", len(BAD_FRAMES), where=target)
        errors = sorted(e["error"] for e in rejected)
        assert len(errors) == 3, errors
        assert any("exceeds" in e for e in errors)
        assert any("undecodable" in e for e in errors)
        assert any("not a message array" in e for e in errors)
        assert {e["src"] for e in rejected} == {"driver" if target == "client" else "rank0"}
        assert m.flush(10).completed
        assert_delivered_everything(m)
