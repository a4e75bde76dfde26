"""`MESHLOG_STACK_PATCH`: the stack's generic way to be patched from outside (the self-test
uses it, so the stack never imports the self-test)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_meshlog.stack.patches import PATCH_ENV, PatchError, apply_patches
from tests.stack_helpers import child, mesh


def test_every_host_and_child_calls_the_named_patch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = tmp_path / "probe"
    probe.mkdir()
    monkeypatch.setenv(PATCH_ENV, "tests.children.patch_probe:record")
    monkeypatch.setenv("PATCH_PROBE_DIR", str(probe))
    root = str(Path(__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    with mesh(tmp_path, [child("lines"), child("lines")], hosts=2) as client:
        client.wait_children(20)
        client.stop(20)
    calls = sorted(p.name.split("-")[0] + ":" + p.read_text() for p in probe.iterdir())
    assert calls == ["child:0", "child:1", "host:-", "host:-"]


def test_no_patch_named_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PATCH_ENV, raising=False)
    apply_patches("host")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.children.no_such_module:record", "No module named 'tests.children.no_such"),
        ("tests.children.patch_probe:nothing", "has no attribute 'nothing'"),
    ],
)
def test_a_patch_that_cannot_be_found_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, spec: str, message: str
) -> None:
    monkeypatch.setenv(PATCH_ENV, spec)
    with pytest.raises(PatchError, match=f"MESHLOG_STACK_PATCH={spec!r}: .*{message}"):
        apply_patches("child")
