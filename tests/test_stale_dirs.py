"""A SIGKILLed driver cannot remove its socket folder; the next driver does (issue 11,
finding 8), and only folders whose owner is dead: a live driver's are left alone."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_meshlog.stack import LoggingMeshClient, StackConfig
from pytest_meshlog.stack.procs import OWNER_FILE

from .stack_helpers import SIMPLE, Captured

pytestmark = pytest.mark.timeout(120)

DRIVER = f"""
import sys
from pytest_meshlog.stack import ChildSpec, LoggingMeshClient, StackConfig
m = LoggingMeshClient(StackConfig(enable_log_forwarding=True), sink=lambda t, d: None)
m.spawn([ChildSpec([sys.executable, {SIMPLE!r}, "hang"])])
print(m.sockdir, m.workdir, flush=True)
sys.stdin.read()  # until killed, or told to finish (EOF)
m.close()
"""


def start_driver() -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    sockdir, workdir = proc.stdout.readline().split()
    return proc, sockdir, workdir


def test_the_next_driver_removes_the_folders_of_a_killed_driver(tmp_path: Path) -> None:
    killed, dead_socks, dead_work = start_driver()
    alive, live_socks, live_work = start_driver()
    try:
        assert any(n.endswith(".sock") for n in os.listdir(dead_socks))
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        assert os.path.isdir(dead_socks) and os.path.isdir(dead_work)  # nobody removed them
        cfg = StackConfig(enable_log_forwarding=True)
        with LoggingMeshClient(cfg, workdir=tmp_path / "mesh", sink=Captured()) as m:
            removed = {e["path"]: e["owner_pid"] for e in m.read_journal()
                       if e["ev"] == "stale_dir_removed"}  # fmt: skip
        assert removed.get(dead_socks) == killed.pid
        assert removed.get(dead_work) == killed.pid
        assert not os.path.exists(dead_socks) and not os.path.exists(dead_work)
        assert os.path.isfile(os.path.join(live_socks, OWNER_FILE))  # the live one stays
        assert live_socks not in removed and live_work not in removed
    finally:
        assert alive.stdin is not None
        alive.stdin.close()  # the live driver ends and cleans up after itself
        for proc in (killed, alive):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for path in (dead_socks, dead_work):
            shutil.rmtree(path, ignore_errors=True)
        assert not os.path.exists(live_socks) and not os.path.exists(live_work)


MAKER = """
from pytest_meshlog.stack.private_dirs import private_dir
print(private_dir("ml-fwd-"), flush=True)
input()  # until killed
"""


def test_any_private_folder_of_a_killed_process_is_removed_by_the_next_driver(
    tmp_path: Path,
) -> None:
    """Not only a driver's: a forwarder's ephemeral folder (or a backend's TMPDIR) made by
    a process that was then SIGKILLed stayed in /tmp for good, since nothing claimed it."""
    maker = subprocess.Popen(
        [sys.executable, "-c", MAKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert maker.stdout is not None and maker.stdin is not None
    folder = maker.stdout.readline().strip()
    maker.send_signal(signal.SIGKILL)
    maker.wait(10)
    maker.stdout.close()
    maker.stdin.close()
    try:
        assert os.path.isdir(folder)
        cfg = StackConfig(enable_log_forwarding=True)
        with LoggingMeshClient(cfg, workdir=tmp_path / "mesh", sink=Captured()) as m:
            removed = [e for e in m.read_journal() if e["ev"] == "stale_dir_removed"]
        assert {e["path"]: e["owner_pid"] for e in removed}.get(folder) == maker.pid
        assert not os.path.exists(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
