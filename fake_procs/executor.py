"""Running a script inside a child: `execute(script, rt) -> exit code`.

Kept to the stdlib and off Faker: this is on every child's start-up path. It runs on the
script's JSON form (the driver validated it before the process started).

The progress record (`{rt.record_dir}/rank{rank}.progress`) is the child's testimony of
what reached fd 1/2. One ASCII line per event, each a single unbuffered `os.write`, so a
line written just before a SIGKILL survives it:

    fake_procs/1 rank=3 pid=4242 steps=5   header
    w o d 2 57      57 bytes for stdout (o|e) via os.write (d) or via sys.stdout's buffer (b),
                    during step 2; written BEFORE the bytes are handed to the fd
    c o d 2 30      correction: that write stopped after 30 bytes (the fd write failed)
    close o 3       stream closed (fd 1 now /dev/null)
    barrier 4 wait  /  barrier 4 acked 7  /  barrier 4 timeout
    hang 5          hanging until stop
    stop 5          the runtime is stopping; no further writes from the script
    exit 6 3        about to os._exit(3)
    crash 6 sigkill about to die this way
    end 0           natural end, returning 0

The step index of writes made after the last step (the final flush) is len(steps); a
`b` write may also come from the runtime's own flush while it quiesces (same format).
All writes take `rt.output_lock` (the runtime holds it while quiescing), so at most one
write is ever in flight: only the last `w` line can overstate what reached the pipe.
Under the mesh runtime a stop may end the process before the script logs `stop`.

`execute` replaces sys.stdout/sys.stderr with buffered writers over a recording raw fd,
so anything else printed in the child is recorded too (and flagged by the replay).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .render import FDS, LETTERS, STREAMS, WRITE_OPS, Renderer

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

    from .runtime import Runtime
    from .scripts import Script

PROGRESS_FORMAT = "fake_procs/1"


def progress_path(record_dir: str | os.PathLike[str], rank: int) -> str:
    return os.path.join(record_dir, f"rank{rank}.progress")


class Recorder:
    """Appends progress lines with one os.write each; a no-op without a record dir."""

    __slots__ = ("fd",)

    def __init__(self, record_dir: str | None, rank: int, nsteps: int) -> None:
        self.fd: int | None = None
        if record_dir is not None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
            self.fd = os.open(progress_path(record_dir, rank), flags, 0o644)
            self.note(f"{PROGRESS_FORMAT} rank={rank} pid={os.getpid()} steps={nsteps}")

    def note(self, line: str) -> None:
        if self.fd is not None:
            os.write(self.fd, line.encode() + b"\n")


class _RecordingFd(io.RawIOBase):
    """The raw layer under our sys.stdout/sys.stderr: records each chunk, then writes it."""

    def __init__(self, stream: str, executor: _Executor) -> None:
        super().__init__()
        self._stream = stream
        self._executor = executor

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return FDS[self._stream]

    def write(self, b: ReadableBuffer, /) -> int:
        data = bytes(b)
        self._executor.hand_off(self._stream, "b", data)
        return len(data)


class _Executor:
    __slots__ = ("buffers", "index", "nsteps", "rec", "rt")

    def __init__(self, rt: Runtime, rec: Recorder, nsteps: int) -> None:
        self.rt = rt
        self.rec = rec
        self.nsteps = nsteps
        self.index = 0
        self.buffers: dict[str, io.BufferedWriter[_RecordingFd]] = {}

    def install_buffers(self) -> None:
        """Replace sys.stdout/sys.stderr so buffered-mode bytes are recorded when they
        actually leave Python's buffer (a flush step, a full buffer, or the runtime's
        flush while quiescing), not when the script hands them over."""
        for stream in STREAMS:
            old = getattr(sys, stream)
            with contextlib.suppress(OSError, ValueError, AttributeError):
                old.flush()
            buf = io.BufferedWriter(_RecordingFd(stream, self))
            self.buffers[stream] = buf
            text = io.TextIOWrapper(buf, encoding="utf-8", errors="backslashreplace")
            setattr(sys, stream, text)

    def hand_off(self, stream: str, path: str, data: bytes) -> None:
        """Record, then write every byte to the fd (os.write may write less than asked)."""
        letter = LETTERS[stream]
        self.rec.note(f"w {letter} {path} {self.index} {len(data)}")
        fd, view, done = FDS[stream], memoryview(data), 0
        try:
            while done < len(data):
                done += os.write(fd, view[done:])
        except OSError:
            self.rec.note(f"c {letter} {path} {self.index} {done}")
            raise

    def write(self, stream: str, mode: str, data: bytes) -> bool:
        """One write under the output lock; False once the runtime is stopping."""
        with self.rt.output_lock:
            if self.rt.stopping.is_set():
                return False
            if mode == "fd":
                self.hand_off(stream, "d", data)
            else:
                self.buffers[stream].write(data)
        return True

    def flush(self, streams: tuple[str, ...]) -> bool:
        with self.rt.output_lock:
            if self.rt.stopping.is_set():
                return False
            for stream in streams:
                getattr(sys, stream).flush()  # our TextIOWrapper, down to the recording fd
        return True

    def close(self, stream: str) -> bool:
        with self.rt.output_lock:
            if self.rt.stopping.is_set():
                return False
            getattr(sys, stream).flush()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, FDS[stream])  # closes our pipe end; fd stays valid, never reused
            os.close(devnull)
            self.rec.note(f"close {LETTERS[stream]} {self.index}")
        return True

    def run(self, steps: list[Mapping[str, Any]], corpus: list[str]) -> int:
        rt, rec = self.rt, self.rec
        renderer = Renderer(rt.rank, corpus)
        for index, step in enumerate(steps):
            self.index = index
            op = step["op"]
            if op in WRITE_OPS:
                mode = step["mode"]
                for stream, data in renderer.payloads(step):
                    if not self.write(stream, mode, data):
                        return self.stopped()
            elif op == "flush":
                if not self.flush((step["stream"],) if step["stream"] else STREAMS):
                    return self.stopped()
            elif op == "sleep":
                if rt.stopping.wait(step["seconds"]):
                    return self.stopped()
            elif op == "close":
                if not self.close(step["stream"]):
                    return self.stopped()
            elif op == "barrier":
                rec.note(f"barrier {index} wait")
                version = rt.wait_barrier(step["timeout"])
                outcome = "timeout" if version is None else f"acked {version}"
                rec.note(f"barrier {index} {outcome}")
                if rt.stopping.is_set():
                    return self.stopped()
            elif op == "grandchild":
                pid = start_grandchild(step["stream"], step["seconds"])
                rec.note(f"grandchild {index} {pid}")
            elif op == "hang":
                rec.note(f"hang {index}")
                rt.stopping.wait()
                return self.stopped()
            elif op == "exit":
                rec.note(f"exit {index} {step['code']}")
                os._exit(step["code"])
            elif op == "crash":
                rec.note(f"crash {index} {step['how']}")
                crash(step["how"])
            else:
                raise ValueError(f"step {index}: unknown op {op!r}")
        self.index = len(steps)
        if not self.flush(STREAMS):  # a program that ends normally flushes its buffers
            return self.stopped()
        rec.note("end 0")
        return 0

    def stopped(self) -> int:
        self.rec.note(f"stop {self.index}")
        return 0


GRANDCHILD_MARK = "fake_procs-grandchild"
"""In a grandchild's command line, so a leak report shows what it is."""


def start_grandchild(stream: str, seconds: float) -> int:
    """A real process holding the child's `stream` (or both) open, writing nothing; never
    waited for (the child leaves it behind, as a leaked helper would)."""
    import subprocess

    held = STREAMS if stream == "both" else (stream,)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; time.sleep(float(sys.argv[1]))",
         repr(seconds), GRANDCHILD_MARK],
        stdin=subprocess.DEVNULL,
        stdout=None if "stdout" in held else subprocess.DEVNULL,
        stderr=None if "stderr" in held else subprocess.DEVNULL,
    )  # fmt: skip
    proc.returncode = 0  # never reaped here: keeps Popen's finaliser from waiting on it
    return proc.pid


def crash(how: str) -> None:
    """Die now, the way asked: no Python cleanup, no core file, no faulthandler report."""
    if how == "exit":
        os._exit(1)
    sig = {"sigkill": signal.SIGKILL, "sigsegv": signal.SIGSEGV, "abort": signal.SIGABRT}[how]
    if sig != signal.SIGKILL:
        import resource

        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        faulthandler = sys.modules.get("faulthandler")
        if faulthandler is not None:
            faulthandler.disable()
        with contextlib.suppress(ValueError):  # not the main thread: default action likely
            signal.signal(sig, signal.SIG_DFL)
    if how == "abort":
        os.abort()
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)  # only if the signal was somehow not fatal


def execute(script: Script | Mapping[str, Any], rt: Runtime) -> int:
    """Run `script` (a Script or its `to_dict()` form) as rank `rt.rank`; the exit code.

    Returns 0 at a natural end and as soon as `rt.stopping` is seen. `exit` and `crash`
    steps never return.
    """
    data: Mapping[str, Any] = script if isinstance(script, Mapping) else script.to_dict()
    steps = list(data["steps"])
    executor = _Executor(rt, Recorder(rt.record_dir, rt.rank, len(steps)), len(steps))
    executor.install_buffers()
    return executor.run(steps, list(data.get("corpus", ())))
