"""Leak checks (issue 7): leaked processes, driver fds and stack socket directories are
reported with the component that made them; a clean mesh passes; the check can be turned
off; it works per xdist worker. `LeakChecker` is tested in-process, the fixture and its
options through real pytest sessions in a subprocess."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_meshlog.leaks import LeakChecker
from pytest_meshlog.stack import LoggingMeshClient, StackConfig
from pytest_meshlog.stack.channel import private_dir

from .stack_helpers import Captured, child, mesh

pytestmark = pytest.mark.timeout(180)

BASE_ARGS = ("-p", "no:cacheprovider", "-p", "no:benchmark", "-p", "no:hypothesispytest")


def checker(tmp_path: Path) -> LeakChecker:
    c = LeakChecker(tmp_path / "dirs.jsonl", grace_s=0.3)
    c.start()
    return c


def test_clean_mesh_leaves_nothing(tmp_path: Path) -> None:
    c = checker(tmp_path)
    with mesh(tmp_path, [child("lines", 3), child("hang")], hosts=2) as m:
        m.stop(20)
    assert c.finish() == []


def test_leaked_process_fd_and_socket_dir_are_named(tmp_path: Path) -> None:
    c = checker(tmp_path)
    proc = subprocess.Popen(["sleep", "30"])
    fd = os.open(tmp_path / "leaked.txt", os.O_WRONLY | os.O_CREAT, 0o600)
    sockdir = private_dir()
    try:
        leaks = [str(leak) for leak in c.finish()]
    finally:
        proc.kill()
        proc.wait()
        os.close(fd)
        shutil.rmtree(sockdir)
    assert len(leaks) == 3, leaks
    assert f"process {proc.pid} `sleep 30`: started by the test (driver process)" in leaks
    assert f"driver fd {fd} (file {tmp_path / 'leaked.txt'}): opened in the driver" in leaks[1]
    assert leaks[2].startswith(f"socket dir {sockdir} (empty): made by ")
    assert "test_leaks.py" in leaks[2] and "the driver (pytest) process" in leaks[2]


def test_a_mesh_that_was_never_closed_is_attributed(tmp_path: Path) -> None:
    c = checker(tmp_path)
    client = LoggingMeshClient(
        StackConfig(enable_log_forwarding=True), workdir=tmp_path / "mesh", sink=Captured()
    )
    try:
        client.spawn([child("hang")])
        leaks = [str(leak) for leak in c.finish()]
    finally:
        client.close()
    text = "\n".join(leaks)
    assert "bootstrap host process 0 of a mesh that was not stopped" in text
    assert "child process rank 0 of host process 0" in text
    assert f"socket dir {client.sockdir} (c0.sock, client.sock): made by LoggingMeshClient" in text
    assert "eventpoll (an event loop that was never closed?)" in text
    assert f"bound to {client.sockdir}/client.sock): in the stack's directory" in text


def test_closed_things_are_not_leaks(tmp_path: Path) -> None:
    c = checker(tmp_path)
    with open(tmp_path / "f", "w") as f:
        f.write("x")
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    subprocess.run(["true"], check=True)
    shutil.rmtree(private_dir())
    assert c.finish() == []


# -- the fixture and its options, in real sessions ----------------------------------------

INNER = """
import os, subprocess
import pytest
from pytest_meshlog.stack.channel import private_dir

def _note(what):
    with open(os.environ["LEAK_NOTES"], "a") as f:
        f.write(what + "\\n")

def test_clean_mesh(meshlog, fake_procs, capsys, tmp_path):
    (tmp_path / "x").write_text("fine")
    meshlog.spawn([fake_procs.interleaver(lines=5), fake_procs.silent()]).wait_scripts()
    print("captured output is not a leak")

def test_leaks_a_process(meshlog, fake_procs):
    meshlog.spawn(fake_procs.silent()).wait_scripts()
    proc = subprocess.Popen(["sleep", "30"])
    _note(f"pid {proc.pid}")

@pytest.mark.usefixtures("meshlog_leak_check")
def test_leaks_an_fd(tmp_path):
    fd = os.open(tmp_path / "forgotten.txt", os.O_WRONLY | os.O_CREAT)
    _note(f"fd {fd}")

@pytest.mark.usefixtures("meshlog_leak_check")
def test_leaks_a_socket_dir():
    _note(f"dir {private_dir()}")
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    pytester.makepyfile(test_inner=INNER)
    notes = pytester.path / "notes.txt"
    monkeypatch.setenv("LEAK_NOTES", str(notes))
    yield notes
    if notes.exists():  # clean up after the deliberately leaky tests
        for line in notes.read_text().splitlines():
            kind, value = line.split(" ", 1)
            if kind == "pid":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(value), signal.SIGKILL)
            elif kind == "dir":
                shutil.rmtree(value, ignore_errors=True)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        *BASE_ARGS, "--meshlog", "-m", "not meshlog_catalog", *args, timeout=150
    )


@pytest.mark.parametrize("workers", [0, 2], ids=["serial", "xdist"])
def test_fixture_reports_each_leak_with_its_component(
    pytester: pytest.Pytester, inner: Path, workers: int
) -> None:
    result = run(pytester, "-n", str(workers), "-rE")
    result.assert_outcomes(passed=4, errors=3)
    out = result.stdout.str()
    notes = dict(line.split(" ", 1) for line in inner.read_text().splitlines())
    assert f"process {notes['pid']} `sleep 30`: started by the test (driver process)" in out
    assert (
        f"driver fd {notes['fd']} (file " in out and "forgotten.txt): opened in the driver" in out
    )
    assert f"socket dir {notes['dir']} (empty): made by test_leaks_a_socket_dir" in out
    assert "test_clean_mesh" not in "".join(ln for ln in out.splitlines() if "ERROR" in ln)


@pytest.mark.parametrize(
    "how", [("--meshlog-no-leak-check",), ("-o", "meshlog_leak_check=false")], ids=["flag", "ini"]
)
def test_leak_check_can_be_turned_off(
    pytester: pytest.Pytester, inner: Path, how: tuple[str, ...]
) -> None:
    result = run(pytester, *how)
    result.assert_outcomes(passed=4)
