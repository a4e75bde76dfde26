"""The bare relay: the least a log-forwarding mesh can do, as the ceiling the stack chases.

Same topology and producer as the stack, nothing else: a host process reads each child's
pipes in 64 KiB reads, cuts at the last newline and sends length-prefixed frames over a
Unix socket to a relay thread inside the child, which copies the bytes unparsed to one
client thread in the driver, which splits the frames, counts lines and writes them to the
sink. No prefix, sequence numbers, files, journal, validation or teardown rules.

    python benchmarks/bare_relay.py host CLIENT_SOCK WORKDIR N SCRIPT   (started by run())
    python benchmarks/bare_relay.py child LISTEN_SOCK CLIENT_SOCK RANK SCRIPT
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HEADER = struct.Struct("!IB")  # payload length, stream (0 stdout, 1 stderr)
READ = 64 * 1024
HERE = Path(__file__).resolve()


# -- the driver's side ----------------------------------------------------------------------


@dataclass
class BareMesh:
    """A running bare mesh: its host, its children's pids and the client's line count."""

    host: subprocess.Popen[bytes]
    children: list[int]
    client: BareClient

    def release(self) -> None:
        """Let every child start its flood (the standalone runtime acks a barrier on SIGUSR1)."""
        for pid in self.children:
            os.kill(pid, signal.SIGUSR1)

    def close(self) -> None:
        """End the host's process group (host and children) and the client thread."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.host.pid, signal.SIGKILL)
        self.host.wait(10)
        self.client.close()


class BareClient:
    """One thread serving every child's relay: split frames, count lines, write the sink."""

    def __init__(self, path: str, children: int, sink: Callable[[bytes], None]) -> None:
        self.lines = 0
        self._sink = sink
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(path)
        self._server.listen(children)
        self._children = children
        self._conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, name="bare-client", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import selectors

        sel = selectors.DefaultSelector()
        for _ in range(self._children):
            accepted, _ = self._server.accept()
            self._conns.append(accepted)
            sel.register(accepted, selectors.EVENT_READ, bytearray())
        while sel.get_map():
            for key, _ in sel.select():
                conn, buf = key.fileobj, key.data
                assert isinstance(conn, socket.socket) and isinstance(buf, bytearray)
                data = conn.recv(4 * READ)
                if not data:
                    sel.unregister(conn)
                    continue
                buf += data
                self._frames(buf)

    def _frames(self, buf: bytearray) -> None:
        at = 0
        while len(buf) - at >= HEADER.size:
            size, _stream = HEADER.unpack_from(buf, at)
            end = at + HEADER.size + size
            if end > len(buf):
                break
            payload = bytes(buf[at + HEADER.size : end])
            self.lines += payload.count(b"\n")
            self._sink(payload)
            at = end
        del buf[:at]

    def close(self) -> None:
        for conn in self._conns:
            conn.close()
        self._server.close()
        self.thread.join(10)


def start(
    workdir: Path, children: int, script_path: Path, sink: Callable[[bytes], None]
) -> BareMesh:
    """Start a bare mesh whose children wait for `release()` before running the rest."""
    client_path = str(workdir / "c.sock")
    client = BareClient(client_path, children, sink)
    host = subprocess.Popen(
        [sys.executable, str(HERE), "host", client_path, str(workdir), str(children), str(script_path)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    assert host.stdout is not None
    line = host.stdout.readline()  # the host prints its children's pids once they relay
    if not line:
        raise RuntimeError(f"the bare host exited ({host.wait(10)}) before its children were ready")
    return BareMesh(host, [int(p) for p in line.split()], client)


# -- the host -------------------------------------------------------------------------------


def _tee(pipe: int, stream: int, out: socket.socket, lock: threading.Lock) -> None:
    carry = b""
    while chunk := os.read(pipe, READ):
        cut = chunk.rfind(b"\n") + 1
        if not cut:
            carry += chunk
            continue
        payload, carry = carry + chunk[:cut], chunk[cut:]
        with lock:
            out.sendall(HEADER.pack(len(payload), stream) + payload)
    if carry:
        with lock:
            out.sendall(HEADER.pack(len(carry), stream) + carry)


def host_main(client_path: str, workdir: str, n: int, script_path: str) -> None:
    procs, threads = [], []
    for rank in range(n):
        listen = os.path.join(workdir, f"f{rank}.sock")
        proc = subprocess.Popen(
            [sys.executable, str(HERE), "child", listen, client_path, str(rank), script_path],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(proc)
        out = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + 30
        while True:
            try:
                out.connect(listen)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"bare child {rank} did not listen on {listen} in 30 s"
                    ) from None
                time.sleep(0.002)
        lock = threading.Lock()
        for stream, pipe in enumerate((proc.stdout, proc.stderr)):
            assert pipe is not None
            t = threading.Thread(target=_tee, args=(pipe.fileno(), stream, out, lock), daemon=True)
            t.start()
            threads.append(t)
    print(" ".join(str(p.pid) for p in procs), flush=True)
    for t in threads:
        t.join()
    for p in procs:
        p.wait()


# -- the child ------------------------------------------------------------------------------


def _relay(listen: socket.socket, client_path: str) -> None:
    conn, _ = listen.accept()
    out = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    out.connect(client_path)
    while data := conn.recv(4 * READ):
        out.sendall(data)


def child_main(listen_path: str, client_path: str, rank: str, script_path: str) -> None:
    listen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listen.bind(listen_path)
    listen.listen(1)
    # the standalone runtime takes SIGUSR1 (the release) with sigwait; block it in the relay
    # thread too, or it may land there and end the process
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGUSR1})
    threading.Thread(
        target=_relay, args=(listen, client_path), name="bare-relay", daemon=True
    ).start()
    from fake_procs.__main__ import main

    main(["--standalone", "--rank", rank, script_path])


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    if role == "host":
        host_main(args[0], args[1], int(args[2]), args[3])
    elif role == "child":
        child_main(*args)
    else:
        raise SystemExit(f"bare_relay.py: unknown role {role!r} (host or child)")
