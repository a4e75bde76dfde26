"""Small hand-written children for the stack's own tests (no fake_procs involved)."""

from __future__ import annotations

import os
import signal
import sys
import time

from pytest_meshlog.stack.child import ChildRuntime, run_child


def workload(rt: ChildRuntime) -> int:
    mode = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    if mode == "lines":
        with rt.output_lock:
            for i in range(n):
                os.write(1, f"out {rt.rank} {i}\n".encode())
                os.write(2, f"err {rt.rank} {i}\n".encode())
            os.write(1, b"tail-out")
            os.write(2, b"tail-err")
        return 0
    if mode == "hang":
        with rt.output_lock:
            os.write(1, b"hanging\npartial")
        while not rt.stopping.is_set():
            time.sleep(0.01)
        return 0
    if mode == "crash":
        with rt.output_lock:
            for i in range(n):
                os.write(1, f"out {rt.rank} {i}\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "phases":
        with rt.output_lock:
            os.write(1, b"phase1\n")
        rt.wait_barrier(10.0)
        with rt.output_lock:
            os.write(1, b"phase2\n")
        return 0
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    run_child(workload)
