"""Hosts share compiled modules when Python may not write them (PYTHONDONTWRITEBYTECODE),
and the children keep the settings their own environment gives them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pytest_meshlog.stack import ChildSpec, LoggingMeshClient, StackConfig
from pytest_meshlog.stack.bytecode import host_env
from tests.stack_helpers import Captured

ROOT = Path(__file__).resolve().parent.parent


def test_host_env_uses_the_cache_only_where_bytecode_may_not_be_written(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert host_env({"PYTHONDONTWRITEBYTECODE": "1", "A": "b"}, cache) == {
        "A": "b",
        "PYTHONPYCACHEPREFIX": str(cache),
    }
    assert host_env({"A": "b"}, cache) == {"A": "b"}  # Python writes it already
    mine = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": "/mine"}
    assert host_env(mine, cache) == mine  # the user's own cache wins
    assert host_env({"PYTHONDONTWRITEBYTECODE": "1"}, None) == {"PYTHONDONTWRITEBYTECODE": "1"}


def _run(tmp_path: Path, name: str, cache: Path) -> bytes:
    sink = Captured()
    client = LoggingMeshClient(
        StackConfig(enable_log_forwarding=True, prefix_with_rank=False),
        workdir=tmp_path / name, sink=sink, bytecode_cache=cache,
    )  # fmt: skip
    try:
        client.spawn([ChildSpec([sys.executable, "-m", "tests.children.bytecode_probe"])])
        client.wait_children(20)
        client.stop(20)
    finally:
        client.close()
    return sink.out[0]


def test_hosts_share_bytecode_and_forked_children_keep_their_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.delenv("PYTHONPYCACHEPREFIX", raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cache = tmp_path / "cache"
    first = _run(tmp_path, "first", cache)
    compiled = {p.name for p in cache.rglob("*.pyc")}
    tag = sys.implementation.cache_tag
    assert {f"bootstrap.{tag}.pyc", f"tee.{tag}.pyc"} <= compiled
    assert b"dont_write=True prefix=None" in first  # the child: as its environment says
    stamps = {p: p.stat().st_mtime_ns for p in cache.rglob("*.pyc")}
    second = _run(tmp_path, "second", cache)
    assert b"dont_write=True prefix=None" in second
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # loaded, not compiled again
