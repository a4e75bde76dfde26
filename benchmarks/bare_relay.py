"""The bare relay: the least a log-forwarding mesh can do, as the ceiling the stack chases.

Same topology and producer as the stack, nothing else: a host process reads each child's
pipes in 64 KiB reads, cuts at the last newline and sends length-prefixed frames over a
Unix socket to a relay thread inside the child, which copies the bytes unparsed to one
client thread in the driver, which splits the frames, counts lines and writes them to the
sink. No prefix, sequence numbers, files, journal, validation or teardown rules.

With `batch` > 0 it also does, as leanly as it can (threads, no asyncio, no msgpack), the
work the spec asks of every line: the host writes each read to a console file, prefixes
the lines with their rank, appends them to the host's file of that stream (Env::Local)
and cuts them into batches of at most `batch` lines, one frame each with its line count
and sequence number; the relay in the child and the client check every frame's count
against its newlines; the client checks the sequence and starts every printed line with
its head. That is the floor under the stack's cost with the spec's batches, and a low
one: it leaves out the send window and its acks, the fallback, heartbeats and journal.

    python benchmarks/bare_relay.py host CLIENT_SOCK WORKDIR N SCRIPT BATCH   (started by start())
    python benchmarks/bare_relay.py child LISTEN_SOCK CLIENT_SOCK RANK SCRIPT BATCH
(BATCH 0: the bare relay; else the spec's work with batches of BATCH lines)
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

from pytest_meshlog.stack.blobs import Cutter, Lines
from pytest_meshlog.stack.framing import LineFramer

HEADER = struct.Struct("!IB")  # payload length, stream (0 stdout, 1 stderr)
BATCH_HEADER = struct.Struct("!IBHQ")  # with the spec's work: ... then line count, seq
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
    """One thread serving every child's relay: split frames, count lines, write the sink
    (with the spec's work: check each batch's count and seq, prefix its lines' head)."""

    def __init__(
        self, path: str, children: int, sink: Callable[[bytes], None], batch: int = 0
    ) -> None:
        self.lines = 0
        self._sink = sink
        self._batch = batch
        self._next_seq: dict[tuple[int, int], int] = {}
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
                if self._batch:
                    self._batches(conn.fileno(), buf)
                else:
                    self._frames(buf)

    def _batches(self, source: int, buf: bytearray) -> None:
        at = 0
        out: list[bytes] = []
        while len(buf) - at >= BATCH_HEADER.size:
            size, stream, nlines, seq = BATCH_HEADER.unpack_from(buf, at)
            end = at + BATCH_HEADER.size + size
            if end > len(buf):
                break
            blob = bytes(buf[at + BATCH_HEADER.size : end])
            _check_count(blob, nlines)
            key = (source, stream)
            if seq != self._next_seq.get(key, 0):
                raise ValueError(
                    f"batch seq {seq} from {key}, expected {self._next_seq.get(key, 0)}"
                )
            self._next_seq[key] = seq + nlines
            head = b"[host0 proc[%d]] " % source
            out += (head, blob.replace(b"\n", b"\n" + head), b"\n")
            self.lines += nlines
            at = end
        del buf[:at]
        if out:
            self._sink(b"".join(out))

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
        """Once the children are gone: the thread reads EOF on every connection and ends.
        Sockets are closed only after it ended (closing one under its recv made EBADF); one
        that waits for a child never seen is woken by a shutdown."""
        self.thread.join(10)
        if self.thread.is_alive():
            for sock in (self._server, *self._conns):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self.thread.join(10)
        for sock in (self._server, *self._conns):
            sock.close()


def _check_count(blob: bytes, nlines: int) -> None:
    held = blob.count(b"\n") + 1
    if held != nlines:
        raise ValueError(f"a batch says {nlines} lines but holds {held}")


def start(
    workdir: Path,
    children: int,
    script_path: Path,
    sink: Callable[[bytes], None],
    batch: int = 0,
) -> BareMesh:
    """Start a bare mesh whose children wait for `release()` before running the rest;
    `batch` > 0 adds the spec's work with batches of that many lines."""
    client_path = str(workdir / "c.sock")
    client = BareClient(client_path, children, sink, batch)
    host = subprocess.Popen(
        [sys.executable, str(HERE), "host", client_path, str(workdir), str(children), str(script_path), str(batch)],
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


def _tee_batches(
    pipe: int,
    stream: int,
    out: socket.socket,
    lock: threading.Lock,
    rank: int,
    files: tuple[int, int],
    batch: int,
) -> None:
    """The tee with the spec's work: console file, rank prefix, the host's file, batches
    with count and seq (the stack's own framer and cutter: a few C calls per read)."""
    console, host_file = files
    framer, cutter, seq = LineFramer(b"[%d] " % rank), Cutter(batch), 0

    def send(batches: list[Lines]) -> None:
        nonlocal seq
        parts: list[bytes] = []
        for blob, nlines in batches:
            parts += (BATCH_HEADER.pack(len(blob), stream, nlines, seq), blob)
            seq += nlines
        with lock:
            out.sendall(b"".join(parts))

    while chunk := os.read(pipe, READ):
        _write_all(console, chunk)
        blob = framer.feed_blob(chunk)
        if blob is not None:
            _write_all(host_file, blob + b"\n")  # O_APPEND: one write is one piece
            send(cutter.cut(blob))
    tail = framer.take_partial()
    if tail is not None:
        send([Lines(tail, 1)])


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _append(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)


def host_main(client_path: str, workdir: str, n: int, script_path: str, batch: int) -> None:
    procs, threads = [], []
    host_files = [_append(os.path.join(workdir, f"host-{stream}.log")) for stream in (0, 1)]
    for rank in range(n):
        listen = os.path.join(workdir, f"f{rank}.sock")
        proc = subprocess.Popen(
            [sys.executable, str(HERE), "child", listen, client_path, str(rank), script_path, str(batch)],
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
            if batch:
                files = (
                    _append(os.path.join(workdir, f"console-{rank}-{stream}")),
                    host_files[stream],
                )
                args: tuple[object, ...] = (pipe.fileno(), stream, out, lock, rank, files, batch)
                t = threading.Thread(target=_tee_batches, args=args, daemon=True)
            else:
                t = threading.Thread(
                    target=_tee, args=(pipe.fileno(), stream, out, lock), daemon=True
                )
            t.start()
            threads.append(t)
    print(" ".join(str(p.pid) for p in procs), flush=True)
    for t in threads:
        t.join()
    for p in procs:
        p.wait()


# -- the child ------------------------------------------------------------------------------


def _relay(listen: socket.socket, client_path: str, batch: int) -> None:
    conn, _ = listen.accept()
    out = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    out.connect(client_path)
    if batch:
        _relay_checked(conn, out)
        return
    while data := conn.recv(4 * READ):
        out.sendall(data)


def _relay_checked(conn: socket.socket, out: socket.socket) -> None:
    """Check every batch's count against its newlines, pass on whole checked batches."""
    buf = bytearray()
    while data := conn.recv(4 * READ):
        buf += data
        at = 0
        while len(buf) - at >= BATCH_HEADER.size:
            size, _stream, nlines, _seq = BATCH_HEADER.unpack_from(buf, at)
            end = at + BATCH_HEADER.size + size
            if end > len(buf):
                break
            if buf.count(b"\n", at + BATCH_HEADER.size, end) + 1 != nlines:
                raise ValueError(f"a batch says {nlines} lines but its newlines disagree")
            at = end
        out.sendall(memoryview(buf)[:at])
        del buf[:at]


def child_main(listen_path: str, client_path: str, rank: str, script_path: str, batch: str) -> None:
    listen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listen.bind(listen_path)
    listen.listen(1)
    # the standalone runtime takes SIGUSR1 (the release) with sigwait; block it in the relay
    # thread too, or it may land there and end the process
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGUSR1})
    threading.Thread(
        target=_relay, args=(listen, client_path, int(batch)), name="bare-relay", daemon=True
    ).start()
    from fake_procs.__main__ import main

    main(["--standalone", "--rank", rank, script_path])


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    if role == "host":
        host_main(args[0], args[1], int(args[2]), args[3], int(args[4]))
    elif role == "child":
        child_main(*args)
    else:
        raise SystemExit(f"bare_relay.py: unknown role {role!r} (host or child)")
