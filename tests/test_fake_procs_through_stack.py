"""Every ready-made script through the real stack: what the child says it wrote is what
the bootstrap read from its pipe, byte for byte, and the oracle finds nothing wrong."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from fake_procs import FakeProcs, Script, emitted, progress_path
from pytest_meshlog.harness import MeshHarness

READY_MADE: dict[str, Callable[[FakeProcs], Script]] = {
    "crasher": lambda fp: fp.crasher(after_lines=40, how="sigsegv"),
    "partial_line_writer": lambda fp: fp.partial_line_writer(lines=10),
    "interleaver": lambda fp: fp.interleaver(lines=50),
    "flooder": lambda fp: fp.flooder(lines=5000, line_bytes=120),
    "long_liner": lambda fp: fp.long_liner(nbytes=10_000),
    "binary_writer": lambda fp: fp.binary_writer(lines=20),
    "slow_drip": lambda fp: fp.slow_drip(lines=5, interval=0.01),
    "silent": lambda fp: fp.silent(),
    "hanger": lambda fp: fp.hanger(),
}


@pytest.mark.parametrize("name", sorted(READY_MADE))
def test_ready_made_script_writes_exactly_what_it_says(
    meshlog: MeshHarness, fake_procs: FakeProcs, name: str
) -> None:
    script = READY_MADE[name](fake_procs)
    mesh = meshlog.spawn([script], env="prod")
    if name == "hanger":
        deadline = time.monotonic() + 20
        while b"\nhang " not in mesh.progress(0):
            assert time.monotonic() < deadline, "the hanger never reached its hang step"
            mesh.flush(5)  # each barrier also proves the child is alive and relaying
    else:
        mesh.wait_scripts()
    report = mesh.stop()
    record = progress_path(mesh.workdir / "records", 0)
    wrote = emitted(script, 0, record).streams
    read = {e["stream"]: e["bytes"] for e in mesh.journal() if e["ev"] == "eof" and e["rank"] == 0}
    assert read == {s: len(data) for s, data in wrote.items()}
    report.assert_clean()


def test_four_children_partial_tails_interleaving_and_a_crash(
    meshlog: MeshHarness, fake_procs: FakeProcs
) -> None:
    """The issue's own acceptance run: 4 children on 2 hosts, files on."""
    scripts = [
        fake_procs.partial_line_writer(lines=20),
        fake_procs.interleaver(lines=40),
        fake_procs.crasher(after_lines=30, how="sigkill"),
        fake_procs.script().line().partial().line(stream="stderr").partial(stream="stderr"),
    ]
    mesh = meshlog.spawn(scripts, env="prod", hosts=2)
    mesh.wait_scripts()
    report = mesh.stop()
    report.assert_clean()
    assert report.partial_line_forwarded[0, "stdout"]
    assert report.partial_line_forwarded[3, "stdout"] and report.partial_line_forwarded[3, "stderr"]
    assert all(loss.rank == 2 and loss.rule == "crash-last-batch" for loss in report.lost)
    crashed = report.stream(2, "stdout")
    assert crashed.in_files == crashed.emitted  # the bootstrap wrote every line it read
    assert len(report.files) == 4  # two per host
