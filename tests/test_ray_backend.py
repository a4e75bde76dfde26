"""The `ray` backend: console and file parsing, the usage error, a Ray call that never
returns, and the whole catalog on Ray compared with tests/ray_expected.json.

The Ray tests run a real Ray (PyPI `ray`, the `ray` extra): a local cluster per mesh, in
a helper process; a scenario whose outcome differs from the recorded one fails the catalog
test with a diff.
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
from pytest_meshlog.ray import RayBackend, missing
from pytest_meshlog.ray.client import SLACK_S
from pytest_meshlog.ray.output import Parsed, file_bytes, file_lines, parse_console

from .foreign_catalog import run_and_compare

EXPECTED = Path(__file__).with_name("ray_expected.json")
CYAN, RESET = b"\x1b[36m", b"\x1b[0m"


def _label(pid: int, name: bytes = b"ScriptActor") -> bytes:
    return CYAN + b"(" + name + b" pid=%d)" % pid + RESET + b" "


def _parse(tmp_path: Path, out: bytes, err: bytes = b"", *, aggregated: bool = False) -> Parsed:
    paths = (tmp_path / "client.stdout", tmp_path / "client.stderr")
    paths[0].write_bytes(out)
    paths[1].write_bytes(err)
    return parse_console(
        paths, {4242: 0, 4343: 1}, [0, 1], prefix_with_rank=True, aggregated=aggregated,
        emitted=lambda: {(0, "stdout"): 2, (1, "stdout"): 2},
    )  # fmt: skip


def test_the_rank_is_the_pid_in_rays_label_never_the_line(tmp_path: Path) -> None:
    out = _label(4343) + b"[0] <r0o0> looks like rank 0\n" + _label(4242) + b"plain\n"
    err = b"(ScriptActor pid=4242, ip=10.0.0.1) uncoloured, other node\n"
    parsed = _parse(tmp_path, out, err)
    assert parsed.delivered[1, "stdout"] == [b"[1] [0] <r0o0> looks like rank 0"]
    assert parsed.delivered[0, "stdout"] == [b"[0] plain"]
    assert parsed.delivered[0, "stderr"] == [b"[0] uncoloured, other node"]
    assert parsed.unattributed == [] and parsed.ray_messages == []


def test_rays_own_lines_are_kept_apart_and_strangers_are_reported(tmp_path: Path) -> None:
    raylet = b"\x1b[33m(raylet)\x1b[0m A worker died or was killed while executing a task\n"
    logger = b"2026-12-01 22:01:34,513\tINFO worker.py:2010 -- Started a local Ray instance.\n"
    stranger = _label(99) + b"someone else's worker\n"
    parsed = _parse(tmp_path, raylet + stranger, logger + b"no label at all\n")
    assert [s for s, _ in parsed.ray_messages] == ["stdout", "stderr"]
    assert parsed.unattributed == [
        ("stdout", stranger[:-1]),
        ("stderr", b"no label at all"),
    ]
    assert all(not lines for lines in parsed.delivered.values())


def test_dedup_rows_count_one_plus_the_repeats(tmp_path: Path) -> None:
    out = (
        _label(4242) + b"worker step 1 finished\n"
        + _label(4343) + b"worker step 1 finished\x1b[32m [repeated 3x across cluster]\x1b[0m"
        b" (Ray deduplicates logs by default. Set RAY_DEDUP_LOGS=0 to disable log"
        b" deduplication, or see https://docs.ray.io/x for more options.)\n"
    )  # fmt: skip
    parsed = _parse(tmp_path, out, aggregated=True)
    # 1 + 3 lines (the row stands for the 3 it suppressed); rank 0 emitted 2
    assert parsed.delivered[0, "stdout"] == [b"worker step 1 finished"] * 2
    assert parsed.delivered[1, "stdout"] == [b"worker step 1 finished"] * 2


def test_worker_files_lose_only_rays_markers_and_are_framed_as_emitted(tmp_path: Path) -> None:
    path = tmp_path / "worker-ab12-01000000-4242.out"
    path.write_bytes(b":job_id:01000000\n:actor_name:ScriptActor\none\r\n\n\xff:x\ntail")
    assert file_bytes(path) == b"one\r\n\n\xff:x\ntail"
    framed = [b"[3] one", b"[3] ", b"[3] \xef\xbf\xbd:x", b"[3] tail"]
    assert file_lines(path, 3, prefix_with_rank=True) == framed
    assert file_lines(path, 3, prefix_with_rank=False) == [f[4:] for f in framed]


def test_the_plugin_never_imports_ray() -> None:
    code = (
        "import sys, pytest_meshlog.plugin, pytest_meshlog.ray, pytest_meshlog.ray.plugin;"
        "import pytest_meshlog.ray.script_actor;"
        "sys.exit('ray' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.skipif(missing() is None, reason="Ray is installed here")
def test_without_ray_the_stack_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--meshlog-stack=ray", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--meshlog-stack=ray*pip install 'pytest-meshlog?ray?'*"])


def _ray_leftovers(temp_dir: str) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            mine = any(temp_dir in arg for arg in proc.info["cmdline"] or ())
            if mine and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.Error:
            continue
    return out


@pytest.mark.timeout(180)
@pytest.mark.skipif(missing() is not None, reason=f"Ray cannot run here: {missing()}")
def test_a_ray_call_that_never_returns_is_reported_and_everything_ray_started_ends(
    tmp_path: Path,
) -> None:
    """The driver program is frozen (SIGSTOP), so `ray.shutdown()` cannot answer: the call
    is named with its wait, and the driver, Ray's GCS, raylet, agents and workers are all
    killed and its temp dir removed."""
    plan = MeshPlan(
        scripts=(FakeProcs(seed=1).hanger(),), options=MeshOptions(procs=1),
        workdir=tmp_path, log_dir=None, sink=lambda target, data: None, timeout=30.0,
    )  # fmt: skip
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    client = RayBackend().launch(plan)
    temp_dir = client._tmp
    try:
        assert client.helper_pid is not None
        assert _ray_leftovers(temp_dir), "Ray's processes name the mesh's temp dir"
        os.kill(client.helper_pid, signal.SIGSTOP)
        start = time.monotonic()
        outcome = client.stop(timeout=2.0)
        assert time.monotonic() - start < 2.0 + SLACK_S + 30
        messages = [p.message for p in outcome.problems]
        assert any("ray.shutdown() did not return within 7.0 s" in m for m in messages), messages
        assert client.helper_pid is None
    finally:
        client.close()
    assert not _ray_leftovers(temp_dir)
    assert not os.path.exists(temp_dir)
    assert not {p.pid for p in psutil.Process().children(recursive=True)} - before


@pytest.mark.timeout(900)
@pytest.mark.skipif(missing() is not None, reason=f"Ray cannot run here: {missing()}")
def test_ray_catalog_matches_the_recorded_outcomes(pytester: pytest.Pytester) -> None:
    run_and_compare(pytester, "ray", EXPECTED, "-n", "2", timeout=840)
