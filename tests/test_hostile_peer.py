"""A hostile local peer of the same user (issue 11, findings 1-5 and 8): whatever it sends
to a child's channel or to the client, only its own connection goes, nothing another rank
sent is lost, barriers complete, and the stack's diagnostics land in the journal.

Every peer here is a real socket client (most in a separate process) speaking to the
real socket of a real mesh; finding 1 is reproduced against the client alone, with a real
forwarder process that exits while the driver's loop is busy.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_meshlog.stack import LoggingMeshClient, guards, wire
from pytest_meshlog.stack.channel import FrameConnection
from pytest_meshlog.stack.client import LogClientActor
from pytest_meshlog.stack.guards import guard_accepted
from pytest_meshlog.stack.journal import Journal, read_journal

from .stack_helpers import child, events, mesh, wait_delivered
from .test_channel_private import assert_delivered_everything, send_raw, wait_events

# A peer process: dial PATH, send the SIZE bytes it reads from stdin, then hold the
# connection until the server closes it (prints "closed"); once stdin closes it waits at
# most 10 s more for that, then prints "open" (the server kept listening to it).
PEER = textwrap.dedent(
    r"""
    import select, socket, sys
    path, size = sys.argv[1], int(sys.argv[2])
    payload = b""
    while len(payload) < size:
        payload += sys.stdin.buffer.read1(size - len(payload))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    try:
        s.sendall(payload)
    except OSError:
        pass
    print("sent", flush=True)
    watch = [s, sys.stdin]
    while True:
        ready, _, _ = select.select(watch, [], [], 10 if len(watch) == 1 else 30)
        if s in ready:
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                print("closed", flush=True)
                break
        elif sys.stdin in ready:
            watch = [s]  # told to leave: a last bounded wait for the server's verdict
        else:
            print("open", flush=True)
            break
    """
)


class Peer:
    """A real process connected to a socket of the mesh, holding its connection."""

    def __init__(self, path: str, payload: bytes) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PEER, path, str(len(payload))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(payload)
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == b"sent"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def leave(self) -> str:
        """Close stdin; what the server did to the peer ("closed", or "open" if it still
        held the connection 10 s later)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        out = self.proc.stdout.read()  # (its "closed" may already be in this buffer)
        self.proc.stdout.close()
        self.proc.wait(30)
        return out.decode().strip()


def hello_forwarder(rank: int, secret: bytes | None = None) -> bytes:
    info: dict[str, Any] = {"rank": rank, "hostname": "evil", "proc_id": "p", "pid": 1}
    if secret is not None:
        info["secret"] = secret
    return wire.encode((wire.HELLO, "forwarder", info))


def hello_self(secret: bytes | None = None) -> bytes:
    return wire.encode((wire.HELLO, "self", {} if secret is None else {"secret": secret}))


def secret_of(client: LogClientActor) -> bytes:
    """The mesh secret (getattr: so these attacks also run, and fail, on a stack without)."""
    return bytes(getattr(client, "secret", b""))


def running_mesh(tmp_path: Path) -> Any:
    return mesh(tmp_path, [child("hang"), child("lines", 3)])


def sock(m: LoggingMeshClient, target: str) -> str:
    return os.path.join(m.sockdir, "client.sock" if target == "client" else "c0.sock")


# -- finding 1: a failed write never throws away what the peer already sent -----------------

FORWARDER = textwrap.dedent(
    r"""
    import socket, struct, sys
    import msgpack
    def frame(msg):
        body = msgpack.packb(msg, use_bin_type=True)
        return struct.pack(">I", len(body)) + body
    path, secret = sys.argv[1], bytes.fromhex(sys.stdin.readline().strip())
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    info = {"rank": 0, "hostname": "host0", "proc_id": "proc[0]", "pid": 1, "secret": secret}
    s.sendall(frame([2, "forwarder", info]))
    print("hello", flush=True)
    sys.stdin.readline()  # go
    out = b""
    for b in range(10):
        blob = b"\n".join(b"[0] line %d" % (b * 10 + i) for i in range(10))
        out += frame([0, "host0", "proc[0]", 0, 10, blob, b * 10])
    s.sendall(out + frame([7, {"eof_streams": ["stderr", "stdout"]}]))
    s.close()
    """
)


def test_a_failed_write_reads_what_the_peer_sent_before_it_went(tmp_path: Path) -> None:
    """A forwarder sends 100 lines and its Bye, then exits, while the driver's loop is
    busy; the driver then starts a barrier and its FORCE_SYNC hits the dead socket (EPIPE).
    Every line and the Bye must still be taken, and the barrier complete by that Bye."""
    sockdir = tmp_path / "s"
    sockdir.mkdir(mode=0o700)
    (tmp_path / "j").mkdir()
    journal = Journal(tmp_path / "j", "driver")
    client = LogClientActor(str(sockdir / "client.sock"), journal, sink=lambda t, d: None)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    peer = subprocess.Popen(
        [sys.executable, "-c", FORWARDER, client.address],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        asyncio.run_coroutine_threadsafe(client.start(), loop).result(10)
        assert peer.stdin is not None and peer.stdout is not None
        peer.stdin.write(secret_of(client).hex() + "\n")
        peer.stdin.flush()
        assert peer.stdout.readline().strip() == "hello"
        connected = asyncio.run_coroutine_threadsafe(
            client.wait_until(lambda: 0 in client.forwarders, time.monotonic() + 10), loop
        )
        assert connected.result(15), "the forwarder's HELLO was not taken within 10 s"
        outcome: list[Any] = []

        def busy_then_barrier() -> None:
            # The loop is busy: the forwarder sends everything and exits meanwhile.
            assert peer.stdin is not None
            peer.stdin.write("go\n")
            peer.stdin.flush()
            peer.wait(20)
            barrier = client.start_sync_flush(frozenset({0}))
            client.cast_force_sync(barrier)  # written to a dead socket: EPIPE
            outcome.append(barrier)

        loop.call_soon_threadsafe(busy_then_barrier)

        async def answer() -> Any:
            while not outcome:
                await asyncio.sleep(0.001)
            return await asyncio.wait_for(outcome[0].future, 10)

        result = asyncio.run_coroutine_threadsafe(answer(), loop).result(20)
        assert client.delivered_count(0, "stdout") == 100
        assert client.delivered[(0, "stdout")] == [b"[0] line %d" % i for i in range(100)]
        assert 0 in client.said_bye and 0 not in client.lost
        assert result.completed and result.acked_ranks == (0,) and result.lost_ranks == ()
        assert [e["via"] for e in read_journal(tmp_path / "j") if e["ev"] == "barrier_acked"] == [
            "bye"
        ]
    finally:
        if peer.poll() is None:
            peer.kill()
        peer.wait(10)
        loop.call_soon_threadsafe(client.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        journal.close()


# -- finding 2 and 5: malformed frames close only their own connection, and are journaled ---

MALFORMED = {
    "log_without_fields": wire.frame(b"\x91\x00"),  # [0]: the 6-byte frame of the report
    "hello_without_args": wire.frame(b"\x91\x02"),  # [2]
    "hello_without_rank": wire.encode((wire.HELLO, "forwarder", {"hostname": "x"})),
    "rank_is_a_list": wire.encode(
        (wire.HELLO, "forwarder", {"rank": [1], "hostname": "h", "proc_id": "p", "pid": 1})
    ),
    "log_bad_target": wire.encode((wire.LOG, "h", "p", 7, 1, b"x", 0)),
    "log_count_lies": wire.encode((wire.LOG, "h", "p", 0, 1, b"a\nb\nc", 0)),
    "log_without_seq": wire.encode((wire.LOG, "h", "p", 0, 1, b"x")),
    "log_negative_seq": wire.encode((wire.LOG, "h", "p", 0, 1, b"x", -1)),
    "flush_version_str": wire.encode((wire.FLUSH, "v1")),
}


@pytest.mark.parametrize("target", ["client", "forwarder_channel"])
def test_malformed_frames_lose_nothing_of_other_ranks(tmp_path: Path, target: str) -> None:
    """Each malformed frame, first on a fresh connection and then behind a valid HELLO
    carrying the mesh secret, closes that connection only, with a journal event naming
    the peer and the cause; no stack traceback reaches a child's stderr; every rank's
    lines arrive and the barriers complete."""
    with running_mesh(tmp_path) as m:
        wait_delivered(m, 0, "stdout", 1)
        path = sock(m, target)
        hello = hello_forwarder(5, secret_of(m.client)) if target == "client" else None
        if hello is None:
            hello = hello_self(secret_of(m.client))
        sent = 0
        for name, data in MALFORMED.items():
            for prefix in (b"", hello):
                if target == "forwarder_channel" and prefix:
                    continue  # a second self-dial is refused before it can say anything
                assert send_raw(path, prefix + data) == "closed", name
                sent += 1
        dropped = wait_events(m, "frame_rejected", sent, where=target)
        dropped += events(m, "connection_refused", where=target)
        assert len(dropped) >= sent, dropped
        assert all(e.get("peer_pid") for e in dropped)
        assert events(m, "message_failed") == []
        assert events(m, "forwarder_error") == [] and events(m, "forwarder_log") == []
        assert m.flush(10).completed
        assert m.delivered.get((0, "stderr"), []) == []  # nothing of the stack's own
        assert_delivered_everything(m)
        console = Path(m.workdir / "console-host0.stderr").read_bytes()
        assert b"Traceback" not in console and b"Error" not in console


def test_a_second_self_dial_is_refused(tmp_path: Path) -> None:
    """Even with the secret, a peer cannot pose as the forwarder's own self-dial (whose
    markers ack barriers)."""
    with running_mesh(tmp_path) as m:
        wait_delivered(m, 0, "stdout", 1)
        data = hello_self(secret_of(m.client)) + wire.encode((wire.FLUSH, 1))
        assert send_raw(sock(m, "forwarder_channel"), data) == "closed"
        refused = wait_events(m, "connection_refused", 1, where="forwarder_channel")
        assert refused[0]["reason"] == "a second self-dial"
        assert_delivered_everything(m)


def test_a_handler_error_is_journaled_and_closes_only_its_connection(tmp_path: Path) -> None:
    """A bug of ours that a peer triggers (any exception in a handler) is journaled as
    `message_failed` with the peer, closes that connection, and prints nothing."""
    (tmp_path / "j").mkdir()
    journal = Journal(tmp_path / "j", "driver")
    path = str(tmp_path / "s.sock")

    def broken(conn: FrameConnection, msg: list[Any]) -> None:
        if msg[0] == wire.FLUSH:
            raise KeyError("boom")

    async def run() -> tuple[bytes, bytes]:
        server = await asyncio.get_running_loop().create_unix_server(
            lambda: guard_accepted(
                FrameConnection(broken), "client", journal, roles=("self",), kinds=(wire.FLUSH,)
            ),
            path=path,
        )
        replies = []
        for _ in range(2):  # the server goes on serving after the first failure
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(hello_self() + wire.encode((wire.FLUSH, 3)))
            replies.append(await asyncio.wait_for(reader.read(), 10))
            writer.close()
        server.close()
        return replies[0], replies[1]

    assert asyncio.run(run()) == (b"", b"")
    failed = [e for e in read_journal(tmp_path / "j") if e["ev"] == "message_failed"]
    assert [e["error"] for e in failed] == ["KeyError('boom')"] * 2
    assert all(e["peer_pid"] == os.getpid() for e in failed)
    journal.close()


def test_asyncio_speaking_in_a_child_goes_to_the_journal_not_its_stderr(tmp_path: Path) -> None:
    """asyncio logs some trouble itself (a connection it dropped, a callback that raised);
    by default that reaches the child's stderr, a stream being judged. The child's runtime
    routes asyncio's logger to the journal: here a real child's asyncio logger speaks."""
    with mesh(tmp_path, [child("asyncio-noise")]) as m:
        wait_delivered(m, 0, "stdout", 1)  # a stop before it wrote would skip the write
        m.stop(30)
        logged = events(m, "forwarder_log", src="rank0")
        assert [(e["level"], e["message"]) for e in logged] == [
            ("ERROR", "meshlog test: asyncio complains")
        ], logged
        assert m.delivered.get((0, "stderr"), []) == []
        assert m.delivered[(0, "stdout")] == [b"[0] spoke"]


# -- finding 3: memory is bounded by one batch ------------------------------------------------


@pytest.mark.parametrize("target", ["client", "forwarder_channel"])
def test_an_unfinished_huge_frame_is_refused_at_its_header(tmp_path: Path, target: str) -> None:
    """Twelve peers each announce a 64 MiB frame (the old limit) and send 1 MiB of it:
    each is refused at its header, before and after a valid HELLO, and nothing is held."""
    with running_mesh(tmp_path) as m:
        wait_delivered(m, 0, "stdout", 1)
        path = sock(m, target)
        big = struct.pack(">I", wire.MAX_FRAME) + b"x" * (1 << 20)
        batch = getattr(wire, "max_log_frame", lambda n: wire.MAX_FRAME)(m.config.read_log_buffer)
        over_batch = struct.pack(">I", batch + 1) + b"x" * 1024
        peers = [Peer(path, big) for _ in range(12)]
        if target == "client":
            peers.append(Peer(path, hello_forwarder(6, secret_of(m.client)) + over_batch))
        assert [p.leave() for p in peers] == ["closed"] * len(peers)
        rejected = wait_events(m, "frame_rejected", len(peers), where=target)
        errors = sorted(e["error"] for e in rejected)
        assert errors.count(f"frame of {wire.MAX_FRAME} bytes exceeds the 4096-byte limit") == 12
        if target == "client":
            assert f"frame of {batch + 1} bytes exceeds the {batch}-byte limit" in errors
        assert m.flush(10).completed
        assert_delivered_everything(m)


# -- finding 4: an impostor cannot stand in for a rank -----------------------------------------


def test_an_impostor_without_the_secret_is_refused(tmp_path: Path) -> None:
    """A same-uid process claims rank 0 on the client: it is refused and journaled; rank 0
    stays in every barrier, while the impostor is connected and after it leaves."""
    with running_mesh(tmp_path) as m:
        wait_delivered(m, 0, "stdout", 1)
        impostor = Peer(sock(m, "client"), hello_forwarder(0))
        wrong = Peer(sock(m, "client"), hello_forwarder(0, b"\0" * 32))
        fwd = Peer(sock(m, "forwarder_channel"), hello_self())
        refused = wait_events(m, "connection_refused", 3)
        reasons = {(e["where"], e["peer_pid"]): e["reason"] for e in refused}
        assert reasons[("client", impostor.pid)] == "HELLO without the mesh secret"
        assert reasons[("client", wrong.pid)] == "HELLO with a wrong mesh secret"
        assert reasons[("forwarder_channel", fwd.pid)] == "HELLO without the mesh secret"
        assert [impostor.leave(), wrong.leave(), fwd.leave()] == ["closed"] * 3
        after = m.flush(10)
        assert after.completed and 0 in after.acked_ranks, after
        assert events(m, "forwarder_lost") == []
        assert_delivered_everything(m)


def test_a_peer_that_never_says_hello_is_refused_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A same-uid process that connects to the client and sends nothing, or half a HELLO,
    would hold its connection (and its buffer) for as long as it likes: the client refuses
    it at the HELLO deadline and journals why. The deadline is shortened here from its 10 s
    (it is read when a connection is accepted, in this process: the driver), once the
    mesh's own forwarders are connected, so that a busy machine cannot make them late."""
    with running_mesh(tmp_path) as m:
        wait_delivered(m, 0, "stdout", 1)
        wait_delivered(m, 1, "stdout", 3)  # both forwarders are in before the short deadline
        monkeypatch.setattr(guards, "HELLO_TIMEOUT_S", 0.5)
        silent = Peer(sock(m, "client"), b"")
        halfway = Peer(sock(m, "client"), hello_forwarder(0, secret_of(m.client))[:5])
        refused = wait_events(m, "connection_refused", 2)
        reasons = {e["peer_pid"]: e["reason"] for e in refused}
        late = "no HELLO with the mesh secret within 0.5s"
        assert reasons == {silent.pid: late, halfway.pid: late}, refused
        assert [silent.leave(), halfway.leave()] == ["closed"] * 2
        assert events(m, "forwarder_lost") == []
        assert_delivered_everything(m)


def test_the_secret_is_in_no_childs_argv_or_environment(tmp_path: Path) -> None:
    with running_mesh(tmp_path) as m:
        wait_delivered(m, 0, "stdout", 1)
        secret = secret_of(m.client)
        pids = [e["pid"] for e in events(m, "child_spawned")]
        assert len(pids) == 2
        for pid in pids:
            for what in ("environ", "cmdline"):
                try:
                    raw = Path(f"/proc/{pid}/{what}").read_bytes()
                except OSError:
                    continue  # rank 1 may have ended
                assert secret not in raw and secret.hex().encode() not in raw
        assert_delivered_everything(m)


# -- finding 8 (part): the inherited listener keeps its backlog ---------------------------


@pytest.fixture
def many_fds() -> Iterator[None]:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 700:
        pytest.skip(f"needs 700 file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 700), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.usefixtures("many_fds")
def test_a_childs_socket_queues_500_connections(tmp_path: Path) -> None:
    """With the child stopped (so nothing is accepted), 500 connections all queue on its
    socket: the backlog is the 1024 asked for, not asyncio's default of 100."""
    with running_mesh(tmp_path) as m:
        wait_delivered(m, 0, "stdout", 1)
        assert m.kill(0, signal.SIGSTOP)
        conns: list[socket.socket] = []
        refused = 0
        try:
            for _ in range(500):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.setblocking(False)
                try:
                    s.connect(sock(m, "forwarder_channel"))
                    conns.append(s)
                except OSError as exc:
                    assert exc.errno in (errno.EAGAIN, errno.ECONNREFUSED), exc
                    refused += 1
                    s.close()
        finally:
            for s in conns:
                s.close()
            m.kill(0, signal.SIGCONT)
        assert (len(conns), refused) == (500, 0)
        assert m.flush(10).completed
        assert_delivered_everything(m)


@pytest.mark.parametrize(
    ("msg", "says"),
    [
        ([wire.LOG], "is not [0, hostname"),
        ([wire.LOG, "h", "p", 0, 1, b"x"], "blob, seq]"),
        ([wire.LOG, "h", "p", 2, 1, b"x", 0], "target 2"),
        ([wire.LOG, "h", "p", 0, 0, b"", 0], "line count 0"),
        ([wire.LOG, "h", "p", 0, 101, b"x", 0], "line count 101"),
        ([wire.LOG, "h", "p", 0, 1, "text", 0], "a str, not bytes"),
        ([wire.LOG, "h", "p", 0, 2, b"one line", 0], "says 2 lines but its blob holds 1"),
        ([wire.LOG, "h" * 300, "p", 0, 1, b"x", 0], "longer than 256"),
        ([wire.LOG, "h", "p", 0, 1, b"x" * 5000, 0], "too long for 1 lines"),
        ([wire.LOG, "h", "p", 0, 1, b"x", -1], "seq -1 is not an int >= 0"),
        ([wire.LOG, "h", "p", 0, 1, b"x", True], "seq True is not an int >= 0"),
    ],
)
def test_a_log_message_is_checked_field_by_field(msg: list[Any], says: str) -> None:
    """What the forwarder checks before it relays a Log (and the client before it keeps
    one): each error names the bad value."""
    with pytest.raises(wire.FrameError, match=re.escape(says)):
        wire.check_log(msg, 100)


def test_hello_and_control_messages_are_checked() -> None:
    with pytest.raises(wire.FrameError, match="bad 'rank'"):
        wire.check_hello([wire.HELLO, "forwarder", {"rank": [1], "hostname": "h"}], ("forwarder",))
    with pytest.raises(wire.FrameError, match="role is not one of"):
        wire.check_hello([wire.HELLO, "sender", {"stream": "stdout", "rank": 0}], ("self",))
    with pytest.raises(wire.FrameError, match="Flush is not"):
        wire.check_control([wire.FLUSH, "v1"], (wire.FLUSH,))
    with pytest.raises(wire.FrameError, match="kind is not one of"):
        wire.check_control([wire.STOP], (wire.FLUSH,))
    wire.check_control([wire.FLUSH, None], (wire.FLUSH,))
    info = wire.check_hello([wire.HELLO, "sender", {"stream": "stderr", "rank": 3}], ("sender",))
    assert info == {"stream": "stderr", "rank": 3}
