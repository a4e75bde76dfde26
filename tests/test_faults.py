"""The table of fault kinds: each kind's stages, and no dispatch on a kind's name elsewhere."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from fake_procs import Crash, Hang, script
from pytest_meshlog import faults
from pytest_meshlog.faults import FAULTS
from pytest_meshlog.markers import FAULT_KINDS, Fault, MarkerError

ROOT = Path(__file__).resolve().parent.parent


def fault(kind: str, rank: int = 0, **params: object) -> Fault:
    return Fault.from_marker((kind,), {"rank": rank, **params})


def test_every_kind_does_something_at_some_stage() -> None:
    stages = ("host_env", "client_delay", "script", "after_launch", "at_stop")
    for name, kind in FAULTS.items():
        assert any(getattr(kind, stage) is not None for stage in stages), name
        assert kind.what, name
    assert {name: set(kind.params) for name, kind in FAULTS.items()} == FAULT_KINDS


def test_parameters_default_from_the_table() -> None:
    assert fault("crash").param("how") == "sigkill"
    assert fault("crash", after_lines=4).param("after_lines") == 4
    assert fault("hostile_peer").param("attack") == "garbage"


@pytest.mark.parametrize(
    ("kind", "params", "needle"),
    [
        ("crash", {"how": "gently"}, "crash how='gently'"),
        ("crash", {"after_lines": -2}, "crash after_lines=-2"),
        ("slow_files", {"delay": 9}, "slow_files delay=9"),
        ("slow_client", {"delay": True}, "slow_client delay=True"),
        ("hostile_peer", {"attack": "flood"}, "hostile_peer attack='flood'"),
    ],
)
def test_a_bad_parameter_is_named(kind: str, params: dict[str, object], needle: str) -> None:
    with pytest.raises(MarkerError, match="meshlog_fault marker: ") as info:
        fault(kind, **params)
    assert needle in str(info.value)


def test_plan_stage_host_env_and_client_delay() -> None:
    marks = (fault("slow_files", delay=0.5), fault("file_write_error"), fault("slow_client"))
    assert faults.host_env(marks) == {
        "MESHLOG_FAULT_FILE_DELAY": "0.5",
        "MESHLOG_FAULT_FILE_ERRORS": "1",
    }
    assert faults.client_delay(marks) == 0.01
    assert faults.client_delay((fault("slow_client", delay=2), fault("slow_client"))) == 2.0
    assert faults.client_delay((fault("hang"),)) == 0.0
    assert faults.host_env((fault("crash"),)) == {}


def test_script_stage_crash_and_hang() -> None:
    base = script(seed=3).line("a").flood(4).line("b")
    crashed, hung, same = faults.change_scripts(
        (fault("crash", rank=0, after_lines=2, how="abort"), fault("hang", rank=1)),
        (base, base, base),
    )
    assert [s.kind for s in crashed] == ["line", "flood", "crash"]
    assert crashed.end == Crash(how="abort")
    assert hung.steps == (*base.steps, Hang())
    assert same is base
    ends = script().line("x").exit(0)
    assert faults.change_scripts((fault("hang"),), (ends,)) == (ends,)


def test_a_fault_beyond_the_last_rank_is_named() -> None:
    with pytest.raises(ValueError, match=r"'close_channel' targets rank 2 .*\(ranks 0\.\.1\)"):
        faults.change_scripts((fault("close_channel", rank=2),), (script(), script()))


def test_faulted_ranks() -> None:
    marks = tuple(fault(kind, rank=i) for i, kind in enumerate(sorted(FAULTS)))
    got = faults.faulted_ranks(marks)
    assert {sorted(FAULTS)[r] for r in got} == {"close_channel", "crash", "sigkill_forwarder"}


def _string_dispatch(path: Path) -> list[str]:
    """Comparisons of `x.kind` with a fault kind's name (`== "crash"`, `in ("hang", ...)`),
    and `type(x).__name__`; a stop problem's kind is not a fault's."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        named = {
            c.value
            for c in ast.walk(node)
            if isinstance(node, ast.Compare) and isinstance(c, ast.Constant)
        }
        if (
            isinstance(node, ast.Compare)
            and isinstance(node.left, ast.Attribute)
            and node.left.attr == "kind"
            and named & set(FAULTS)
        ):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "__name__"
            and isinstance(node.value, ast.Call)
            and ast.unparse(node.value.func) == "type"
        ):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_harness_dispatches_no_fault_by_its_name() -> None:
    assert _string_dispatch(ROOT / "pytest_meshlog" / "harness.py") == []
