"""Small hand-written children for the stack's own tests (no fake_procs involved).

Usage: python simple.py MODE [N] [PATH]. Every mode writes straight to fds 1 and 2 under the
runtime's output lock, so what a child wrote is exactly what its mode says.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from pytest_meshlog.stack.child import ChildRuntime, run_child


def write(rt: ChildRuntime, fd: int, data: bytes) -> None:
    with rt.output_lock:
        if not rt.stopping.is_set():
            os.write(fd, data)


def workload(rt: ChildRuntime) -> int:
    mode = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    if mode == "lines":  # n lines per stream, then a partial tail on each
        for i in range(n):
            write(rt, 1, f"out {rt.rank} {i}\n".encode())
            write(rt, 2, f"err {rt.rank} {i}\n".encode())
        write(rt, 1, b"tail-out")
        write(rt, 2, b"tail-err")
        return 0
    if mode == "moved":  # as pytest's capture does: stdout moved to another fd for a while
        with rt.output_lock:
            out = os.dup(1)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            os.write(out, b"one\ntail")
        held = [os.open(os.devnull, os.O_RDONLY) for _ in range(n)]  # a big process to scan
        time.sleep(2.0)
        os.close(out)
        return 0 if held else 1
    if mode == "hang":  # a partial line, then wait to be stopped
        write(rt, 1, b"hanging\npartial")
        while not rt.stopping.is_set():
            time.sleep(0.005)
        return 0
    if mode == "sigkill":  # n lines, then die without quiescing
        for i in range(n):
            write(rt, 1, f"out {rt.rank} {i}\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "phases":  # phase 1, wait for a barrier, phase 2
        write(rt, 1, b"phase1\n")
        got = rt.wait_barrier(20.0)
        write(rt, 1, f"phase2 after v{got}\n".encode())
        return 0
    if mode == "on-go":  # ready, then n lines once the file GO exists, then DONE; hang
        go = sys.argv[3]
        write(rt, 1, b"ready\n")
        deadline = time.monotonic() + 30
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.005)
        write(rt, 1, b"".join(f"line {i}\n".encode() for i in range(n)))
        open(go + ".done", "w").close()
        while not rt.stopping.is_set():
            time.sleep(0.005)
        return 0
    if mode == "two-floods":  # two floods of n 100-byte lines, each once its file exists
        first, second = sys.argv[3], sys.argv[4]  # (the files GO and GO2); then hang
        for name, go in ((b"first", first), (b"second", second)):
            deadline = time.monotonic() + 30
            while not os.path.exists(go) and time.monotonic() < deadline:
                time.sleep(0.005)
            pad = b"x" * (92 - len(name))
            write(rt, 1, b"".join(name + b" %05d " % i + pad + b"\n" for i in range(n)))
        while not rt.stopping.is_set():
            time.sleep(0.005)
        return 0
    if mode == "numbered-flood":  # numbered lines until stopped (or killed)
        i = 0
        while not rt.stopping.is_set():
            write(rt, 1, f"n {i}\n".encode())
            i += 1
        return 0
    if mode == "flood":  # n 41-byte lines as fast as the pipe takes them
        line = b"x" * 40 + b"\n"
        block = line * 200
        for _ in range(n // 200):
            write(rt, 1, block)
        write(rt, 1, line * (n % 200))
        return 0
    if mode in ("grandchild", "grandchild-hang", "daemon-hang"):
        # a grandchild that keeps stdout open ("daemon": that holds nothing), writes nothing
        import subprocess

        out = subprocess.DEVNULL if mode == "daemon-hang" else None
        gc = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)", "simple-grandchild"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        gc.returncode = 0  # left behind on purpose: never waited for
        write(rt, 1, f"grandchild {gc.pid}\ntail-out".encode())
        while mode != "grandchild" and not rt.stopping.is_set():
            time.sleep(0.005)
        return 0
    if mode in ("chain", "chain-session"):  # a grandchild that re-forks back to back (a new
        import subprocess  # pid each generation, the old one exits), keeping stdout open;

        code = (  # "chain-session" leaves the child's process group (a session of its own)
            "import os, sys, time\n"
            "if sys.argv[1] == 'chain-session': os.setsid()\n"
            "end = time.monotonic() + 120\n"
            "while time.monotonic() < end:\n"
            "    if os.fork() != 0: os._exit(0)\n"
        )
        subprocess.Popen(
            [sys.executable, "-c", code, mode, "simple-chain"],
            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ).returncode = 0  # fmt: skip
        write(rt, 1, b"chain started\ntail-out")
        return 0
    if mode == "join-group":  # a grandchild joins another group of the session (argv[3]),
        import subprocess  # not the mesh's, and keeps stdout open

        code = "import os, sys, time\nos.setpgid(0, int(sys.argv[1]))\ntime.sleep(120)\n"
        subprocess.Popen(
            [sys.executable, "-c", code, sys.argv[3], "simple-joiner"],
            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ).returncode = 0  # fmt: skip
        write(rt, 1, b"joined\ntail-out")
        return 0
    if mode == "send-stdout":  # hands its stdout to a process outside the mesh (over
        import array  # SCM_RIGHTS, to the socket at argv[3]), then ends
        import socket

        write(rt, 1, b"handing it over\ntail-out")
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(sys.argv[3])
            s.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [1]))])
            s.recv(1)  # it has the descriptor
        return 0
    if mode == "asyncio-noise":  # asyncio's logger speaks in the child (as when it drops
        import logging  # a connection on its own): the journal must get it, not stderr

        logging.getLogger("asyncio").error("meshlog test: asyncio complains")
        write(rt, 1, b"spoke\n")
        return 0
    if mode == "exit3":
        write(rt, 1, b"about to exit 3\n")
        os._exit(3)
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    run_child(workload)
