"""The `torchrun` backend: console parsing, the per-rank file views, the usage error, a
launcher that does not answer, and the whole catalog under torchrun compared with the
outcomes recorded in tests/torchrun_expected.json.

The catalog comparison runs a real `torch.distributed.run` (the `torchrun` extra) in a
pytest subprocess. It takes a few minutes, so it runs where it is asked for
(MESHLOG_TORCHRUN_CATALOG=1: CI's own step after the README's test command).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fake_procs import FakeProcs
from pytest_meshlog.backend import MeshPlan
from pytest_meshlog.markers import MeshOptions
from pytest_meshlog.torchrun import TorchrunBackend, missing
from pytest_meshlog.torchrun.console import Console, parse_console, rank_files, write_views

from .foreign_catalog import run_and_compare

EXPECTED = Path(__file__).with_name("torchrun_expected.json")
CATALOG_ENV = "MESHLOG_TORCHRUN_CATALOG"


def _console(tmp_path: Path, out: bytes, err: bytes = b"", prefix: bool = True) -> Console:
    paths = (tmp_path / "client.stdout", tmp_path / "client.stderr")
    paths[0].write_bytes(out)
    paths[1].write_bytes(err)
    return parse_console(paths, [0, 1], prefix_with_rank=prefix)


def test_each_label_starts_a_piece_of_its_rank(tmp_path: Path) -> None:
    """torchrun's tailer writes a partial line with no newline: the next label, of any
    rank, follows on the same console line and starts a piece of its own."""
    out = b"[default0]:one\n[default0]:partial0[default1]:two\n[default1]:tail1"
    c = _console(tmp_path, out, prefix=False)
    assert c.delivered[0, "stdout"] == [b"one", b"partial0"]
    assert c.delivered[1, "stdout"] == [b"two", b"tail1"]
    c = _console(tmp_path, out, prefix=True)
    assert c.delivered[1, "stdout"] == [b"[1] two", b"[1] tail1"]


def test_torchruns_own_lines_and_unknown_ranks_are_kept_apart(tmp_path: Path) -> None:
    err = b"\n****\nW1201 12:00 agent api.py:1] Sending process 7 closing signal SIGTERM\n"
    c = _console(tmp_path, b"[default7]:stray\n", err + b"[default0]:e\n")
    assert c.delivered[0, "stderr"] == [b"[0] e"]
    assert c.own[0] == ("stderr", b"****")
    assert c.unattributed == [("stdout", b"[default7]:stray")]


def test_file_views_prefix_each_line_and_end_the_partial_one(tmp_path: Path) -> None:
    rank_dir = tmp_path / "logs" / "job_x" / "attempt_0" / "1"
    rank_dir.mkdir(parents=True)
    (rank_dir / "stdout.log").write_bytes(b"a\nb\npart")
    (rank_dir / "stderr.log").write_bytes(b"")
    files = rank_files(tmp_path / "logs", [0, 1])
    assert files[1, "stdout"] == [rank_dir / "stdout.log"] and files[0, "stdout"] == []
    views = write_views(files, tmp_path / "view", prefix_with_rank=True)
    assert [Path(v).name for v in views] == ["rank1.stderr", "rank1.stdout"]
    assert (tmp_path / "view" / "rank1.stdout").read_bytes() == b"[1] a\n[1] b\n[1] part\n"
    assert (tmp_path / "view" / "rank1.stderr").read_bytes() == b""


def test_the_plugin_never_imports_torch() -> None:
    code = (
        "import sys, pytest_meshlog.plugin, pytest_meshlog.torchrun, "
        "pytest_meshlog.torchrun.plugin; sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.skipif(missing() is None, reason="torch is installed here")
def test_without_torch_the_stack_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--meshlog-stack=torchrun", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--meshlog-stack=torchrun*pip install 'pytest-meshlog?torchrun?'*"]
    )


def _tree() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.mark.skipif(missing() is not None, reason=f"torchrun cannot run here: {missing()}")
def test_a_launcher_that_does_not_answer_is_named_and_everything_ends(tmp_path: Path) -> None:
    """torchrun is frozen (SIGSTOP) while its ranks hang, so the stop's SIGTERM is never
    acted on: the stop names the launcher and its wait, and the launcher and its ranks
    (in sessions of their own, orphaned when it dies) are all ended."""
    plan = MeshPlan(
        scripts=(FakeProcs(seed=1).hanger(),) * 2, options=MeshOptions(procs=2),
        workdir=tmp_path, log_dir=None, sink=lambda target, data: None, timeout=10.0,
    )  # fmt: skip
    before = _tree()
    client = TorchrunBackend().launch(plan)
    ranks = dict(client.pids)
    try:
        assert client.launcher_pid is not None and len(ranks) == 2
        os.kill(client.launcher_pid, signal.SIGSTOP)
        start = time.monotonic()
        outcome = client.stop(timeout=1.5)
        assert time.monotonic() - start < 1.5 + 15  # the wait, then the kills' own bounds
        texts = [p.message for p in outcome.problems if p.kind == "teardown_failed"]
        assert any("did not exit within 1.5s" in t for t in texts), outcome.problems
        assert client.launcher_pid is None
    finally:
        client.close()
    assert not _tree() - before
    assert not [pid for pid in ranks.values() if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]  # fmt: skip


@pytest.mark.timeout(600)
@pytest.mark.skipif(missing() is not None, reason=f"torchrun cannot run here: {missing()}")
@pytest.mark.skipif(
    os.environ.get(CATALOG_ENV) != "1",
    reason=f"the torchrun catalog (about 3 minutes) runs with {CATALOG_ENV}=1 (CI's own step)",
)
def test_torchrun_catalog_matches_the_recorded_outcomes(pytester: pytest.Pytester) -> None:
    run_and_compare(pytester, "torchrun", EXPECTED, "-n", "2", "-p", "no:randomly")
