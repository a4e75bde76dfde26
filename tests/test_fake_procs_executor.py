"""The child program in real subprocesses writing to real pipes, checked against its record.

Most tests use `--standalone` (a stand-in runtime driven by real signals: SIGTERM stops,
SIGUSR1 acks a barrier); one runs under the stack's own child runtime.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fake_procs import FakeProcs, Script, emitted, planned_bytes, read_progress, script

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESHLOG_", "BOOTSTRAP_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


class Child:
    """One fake child process with piped stdout/stderr."""

    def __init__(
        self,
        s: Script,
        tmp: Path,
        rank: int = 3,
        *,
        standalone: bool = True,
        env: dict[str, str] | None = None,
        python_flags: tuple[str, ...] = (),
    ) -> None:
        self.script, self.rank, self.tmp = s, rank, tmp
        path = tmp / f"script{rank}.json"
        s.write(path)
        argv = [sys.executable, *python_flags, "-m", "fake_procs"]
        if standalone:
            argv += ["--standalone", "--rank", str(rank), "--record-dir", str(tmp)]
        argv.append(str(path))
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp,
            env=env if env is not None else _env(),
        )

    @property
    def record(self) -> Path:
        return self.tmp / f"rank{self.rank}.progress"

    def record_text(self) -> str:
        try:
            return self.record.read_text()
        except FileNotFoundError:
            return ""

    def wait_record(self, predicate: Callable[[str], bool], timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.record_text()
            if predicate(text):
                return text
            assert self.proc.poll() is None, f"child exited early: {text[-300:]}"
            time.sleep(0.01)
        raise AssertionError(f"record never matched: {self.record_text()[-300:]}")

    def finish(self, timeout: float = 30.0) -> tuple[bytes, bytes]:
        try:
            return self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.communicate()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.kill()
        child.proc.communicate()


def start(children: list[Child], *args: object, **kw: object) -> Child:
    child = Child(*args, **kw)  # type: ignore[arg-type]
    children.append(child)
    return child


def test_every_write_kind_reaches_the_pipes_as_recorded(
    children: list[Child], tmp_path: Path
) -> None:
    s = (
        script(seed=21)
        .line("explicit")
        .line()
        .partial("tail", mode="buffered")
        .raw(b"\xff\xfe\r\n\x00", stream="stderr", tag=True)
        .flush("stderr")
        .flood(50, 70, mode="buffered")
        .interleave(6, line_bytes=40)
        .sleep(0.01)
        .line("direct")
        .flush()
        .raw(b"A\r\nB", stream="stderr")
        .partial()
    )
    child = start(children, s, tmp_path, 7)
    out, err = child.finish()
    assert child.proc.returncode == 0, err
    e = emitted(s, 7, child.record)
    assert (out, err) == (e.streams["stdout"], e.streams["stderr"])
    assert e.progress.ending == "end" and e.uncertain is None
    assert read_progress(child.record).rank == 7


def test_fd_only_script_writes_exactly_the_plan(children: list[Child], tmp_path: Path) -> None:
    s = FakeProcs(seed=3).interleaver(40)
    child = start(children, s, tmp_path, 12)
    out, err = child.finish()
    assert {"stdout": out, "stderr": err} == planned_bytes(s, 12)
    assert out.startswith(b"<r12o0> ") and err.startswith(b"<r12e0> ")


def test_exit_drops_unflushed_buffer_and_the_record_says_so(
    children: list[Child], tmp_path: Path
) -> None:
    s = script().line("kept").line("lost", mode="buffered").exit(3)
    child = start(children, s, tmp_path)
    out, _ = child.finish()
    assert child.proc.returncode == 3
    assert out == b"kept\n"
    e = emitted(s, 3, child.record)
    assert e.streams["stdout"] == out
    assert e.progress.events[-1] == "exit 2 3"


def test_full_buffer_reaches_the_fd_in_chunks(children: list[Child], tmp_path: Path) -> None:
    s = script(seed=5).flood(300, 99, mode="buffered").exit(0)
    child = start(children, s, tmp_path)
    out, _ = child.finish()
    plan = planned_bytes(s, 3)["stdout"]
    assert 0 < len(out) < len(plan) and plan.startswith(out)
    assert emitted(s, 3, child.record).streams["stdout"] == out


def test_buffered_and_direct_writes_reorder_at_the_fd(
    children: list[Child], tmp_path: Path
) -> None:
    s = script().line("first", mode="buffered").line("second").flush()
    child = start(children, s, tmp_path)
    out, _ = child.finish()
    assert out == b"second\nfirst\n"
    assert emitted(s, 3, child.record).streams["stdout"] == out


@pytest.mark.parametrize(
    ("how", "code"),
    [
        ("exit", 1),
        ("sigkill", -signal.SIGKILL),
        ("sigsegv", -signal.SIGSEGV),
        ("abort", -signal.SIGABRT),
    ],
)
def test_crash_kinds(children: list[Child], tmp_path: Path, how: str, code: int) -> None:
    s = FakeProcs(seed=1).crasher(2, how=how)  # type: ignore[arg-type]
    # faulthandler on in the child: the crash must not add a traceback to stderr.
    child = start(children, s, tmp_path, env=_env(PYTHONFAULTHANDLER="1"))
    out, err = child.finish()
    assert child.proc.returncode == code
    e = emitted(s, 3, child.record)
    assert (out, err) == (e.streams["stdout"], e.streams["stderr"]) and err == b""
    assert e.progress.events[-1] == f"crash 2 {how}" and e.uncertain is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("core")]


def test_close_gives_eof_while_the_child_lives_on(children: list[Child], tmp_path: Path) -> None:
    s = script().line("a").close("stdout").barrier(30).line("b", stream="stderr")
    child = start(children, s, tmp_path)
    assert child.proc.stdout is not None
    assert child.proc.stdout.read() == b"a\n"  # EOF on stdout...
    assert child.proc.poll() is None  # ...with the child still running
    child.wait_record(lambda t: "barrier 2 wait" in t)
    deadline = time.monotonic() + 10
    while "barrier 2 acked" not in child.record_text() and time.monotonic() < deadline:
        os.kill(child.proc.pid, signal.SIGUSR1)  # repeated: the first may precede the wait
        time.sleep(0.05)
    _, err = child.finish()
    assert child.proc.returncode == 0 and err == b"b\n"
    events = read_progress(child.record).events
    assert "close o 1" in events and "barrier 2 acked 1" in events[-3:]


def test_barrier_times_out_and_goes_on(children: list[Child], tmp_path: Path) -> None:
    s = script().barrier(0.05).line("after")
    child = start(children, s, tmp_path)
    out, _ = child.finish()
    assert out == b"after\n"
    assert "barrier 0 timeout" in read_progress(child.record).events


@pytest.mark.parametrize("kind", ["hanger", "slow_drip"])
def test_stopping_ends_hang_and_sleep(children: list[Child], tmp_path: Path, kind: str) -> None:
    fp = FakeProcs(seed=2)
    s = fp.hanger(2) if kind == "hanger" else fp.slow_drip(1000, 0.5)
    child = start(children, s, tmp_path)
    child.wait_record(lambda t: "hang 2" in t if kind == "hanger" else "w o d 0" in t)
    child.proc.send_signal(signal.SIGTERM)  # the stand-in runtime's "stop"
    out, _ = child.finish(timeout=30)
    assert child.proc.returncode == 0
    e = emitted(s, 3, child.record)
    assert e.streams["stdout"] == out
    assert e.progress.ending == "stop"


def test_progress_record_is_exact_after_sigkill_on_a_full_pipe(
    children: list[Child], tmp_path: Path
) -> None:
    s = FakeProcs(seed=4).flooder(1_000_000, 100)
    child = start(children, s, tmp_path)
    # Nobody reads: the child fills the pipe and blocks in a write it has already recorded.
    last, stable_since = -1, time.monotonic()
    while time.monotonic() - stable_since < 0.5:
        size = child.record.stat().st_size if child.record.exists() else 0
        if size != last or size == 0:
            last, stable_since = size, time.monotonic()
        time.sleep(0.02)
    child.kill()
    child.proc.wait(timeout=10)  # dead before anyone reads: the blocked write can't finish
    out, _ = child.finish()
    assert child.proc.returncode == -signal.SIGKILL
    e = emitted(s, 3, child.record)
    # the blocked write: one flood block, whole lines, atomic (at most PIPE_BUF bytes)
    assert e.uncertain is not None and e.uncertain.nbytes % 101 == 0 and e.uncertain.nbytes <= 4096
    assert len(out) > 30_000
    assert (len(out), out) == (len(e.at_least("stdout")), e.at_least("stdout"))


@pytest.mark.parametrize("mode", ["fd", "buffered"])
def test_progress_record_brackets_the_pipe_after_sigkill_mid_flood(
    children: list[Child], tmp_path: Path, mode: str
) -> None:
    s = script(seed=6).flood(5_000_000, 100, mode=mode)  # type: ignore[arg-type]
    child = start(children, s, tmp_path)
    got = bytearray()
    assert child.proc.stdout is not None
    stdout = child.proc.stdout

    def drain() -> None:
        while chunk := os.read(stdout.fileno(), 65536):
            got.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    child.wait_record(lambda t: t.count("\n") > 300)
    child.kill()
    reader.join(timeout=20)
    child.finish()
    assert child.proc.returncode == -signal.SIGKILL
    e = emitted(s, 3, child.record)
    out = bytes(got)
    assert out.startswith(e.at_least("stdout")) and e.streams["stdout"].startswith(out)
    if mode == "fd":  # each 101-byte write is atomic on a pipe: all or nothing
        assert out in (e.at_least("stdout"), e.streams["stdout"])


STAND_IN = """
import sys, threading
from fake_procs import Script, execute

class StandIn:
    rank = 5
    def __init__(self, record_dir, stop):
        self.record_dir = record_dir
        self.output_lock = threading.Lock()
        self.stopping = threading.Event()
        if stop:
            self.stopping.set()
    def wait_barrier(self, timeout):
        return 7

s = Script.from_json(open(sys.argv[1]).read())
sys.exit(execute(s, StandIn(sys.argv[2], sys.argv[3] == "stop")))
"""


@pytest.mark.parametrize("stop", [False, True])
def test_execute_with_a_minimal_stand_in_runtime(tmp_path: Path, stop: bool) -> None:
    s = script().line("one").barrier(1).line("two", mode="buffered")
    path = tmp_path / "s.json"
    s.write(path)
    argv = [sys.executable, "-c", STAND_IN, str(path), str(tmp_path), "stop" if stop else "go"]
    done = subprocess.run(argv, capture_output=True, env=_env(), timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    progress = read_progress(tmp_path / "rank5.progress")
    if stop:
        assert done.stdout == b"" and progress.events == ("stop 0",)
    else:
        assert done.stdout == b"one\ntwo\n"
        assert progress.events == ("barrier 1 wait", "barrier 1 acked 7", "end 0")
    assert emitted(s, 5, tmp_path / "rank5.progress").streams["stdout"] == done.stdout


def test_child_imports_stay_small(children: list[Child], tmp_path: Path) -> None:
    child = start(children, script().line("x"), tmp_path, python_flags=("-X", "importtime"))
    _, err = child.finish()
    modules = {
        line.split("|")[-1].strip()
        for line in err.decode(errors="replace").splitlines()
        if line.startswith("import time:")
    }
    assert "fake_procs.executor" in modules
    heavy = {m for m in modules if m.split(".")[0] in {"faker", "dataclasses", "argparse"}}
    driver_side = {"fake_procs.scripts", "fake_procs.steps", "fake_procs.content"} & modules
    assert not heavy and not driver_side


def test_runs_under_the_stack_child_runtime(children: list[Child], tmp_path: Path) -> None:
    s = script(seed=9).line().partial("tail", mode="buffered").interleave(4)
    env = _env(MESHLOG_RANK="4", MESHLOG_RECORD_DIR=str(tmp_path))
    child = start(children, s, tmp_path, 4, standalone=False, env=env)
    out, err = child.finish()
    assert child.proc.returncode == 0, err
    e = emitted(s, 4, child.record)
    assert (out, err) == (e.streams["stdout"], e.streams["stderr"])
    assert e.progress.ending == "end"
