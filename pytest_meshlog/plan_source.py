"""A `MeshPlan` as the Python source of a pytest test that rebuilds and runs it
(`to_python`): what `run_plan` notes for Hypothesis, so a shrunk failure prints a
paste-ready test; long repeated runs are written as `'x' * 4090`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fake_procs import (
    Barrier,
    Close,
    Crash,
    Exit,
    Flood,
    Flush,
    Grandchild,
    Hang,
    Interleave,
    Line,
    Partial,
    Raw,
    Script,
    Sleep,
    Step,
)

if TYPE_CHECKING:
    from .strategies import MeshPlan


def _literal(value: str | bytes) -> str:
    """`repr`, with runs of 16+ equal characters as `'x' * 4090` (readable 4 KiB lines)."""
    if isinstance(value, bytes) and len(value) > 64:
        try:  # long valid UTF-8 reads better as text: `('xx' + '€' * 1367).encode()`
            return f"({_literal(value.decode())}).encode()"
        except UnicodeDecodeError:
            pass
    pieces: list[str] = []
    plain = 0  # start of the text not yet written out
    i = 0
    while i < len(value):
        j = i
        while j < len(value) and value[j] == value[i]:
            j += 1
        if j - i >= 16:
            if plain < i:
                pieces.append(repr(value[plain:i]))
            pieces.append(f"{value[i : i + 1]!r} * {j - i}")
            plain = j
        i = j
    if plain < len(value) or not pieces:
        pieces.append(repr(value[plain:]))
    return " + ".join(pieces)


def _kw(name: str, value: object, default: object) -> str | None:
    return None if value == default else f"{name}={value!r}"


def _step_call(step: Step) -> str:
    args: list[str | None]
    if isinstance(step, (Line, Partial, Raw)):
        method = {Line: "line", Partial: "partial", Raw: "raw"}[type(step)]
        args = [
            _literal(step.data if isinstance(step, Raw) else step.text),
            _kw("stream", step.stream, "stdout"),
            _kw("mode", step.mode, "fd"),
            _kw("tag", step.tag, False),
        ]
    elif isinstance(step, Flood):
        method = "flood"
        args = [
            repr(step.n),
            repr(step.line_bytes),
            _kw("stream", step.stream, "stdout"),
            _kw("mode", step.mode, "fd"),
        ]
    elif isinstance(step, Interleave):
        method = "interleave"
        args = [
            repr(step.n),
            _kw("line_bytes", step.line_bytes, None),
            _kw("mode", step.mode, "fd"),
        ]
    elif isinstance(step, Flush):
        method, args = "flush", [None if step.stream is None else repr(step.stream)]
    elif isinstance(step, Sleep):
        method, args = "sleep", [repr(step.seconds)]
    elif isinstance(step, Close):
        method, args = "close", [repr(step.stream)]
    elif isinstance(step, Barrier):
        method, args = "barrier", [_kw("timeout", step.timeout, 30.0)]
    elif isinstance(step, Exit):
        method, args = "exit", [repr(step.code)]
    elif isinstance(step, Crash):
        method, args = "crash", [repr(step.how)]
    elif isinstance(step, Grandchild):
        method = "grandchild"
        args = [repr(step.stream), _kw("seconds", step.seconds, 60.0)]
    elif isinstance(step, Hang):
        method, args = "hang", []
    else:  # pragma: no cover - every step type is handled above
        raise TypeError(f"no builder call for {step!r}")
    return f".{method}({', '.join(a for a in args if a is not None)})"


def _script_source(s: Script, indent: str) -> str:
    head = [f"seed={s.seed}", _kw("name", s.name, ""), _kw("flavour", s.flavour, "mixed")]
    lines = [f"fake_procs.script({', '.join(a for a in head if a is not None)})"]
    lines += [f"{indent}    {_step_call(step)}" for step in s.steps]
    if len(lines) == 1:
        return lines[0]
    return (
        "(\n"
        + "\n".join(f"{indent}    {lines[0]}" if i == 0 else ln for i, ln in enumerate(lines))
        + f"\n{indent})"
    )


def to_python(plan: MeshPlan, *, name: str = "test_meshlog_repro") -> str:
    """A pytest test (on the `meshlog` and `fake_procs` fixtures) that replays `plan`."""
    body = ["    scripts = ["]
    body += [f"        {_script_source(s, '        ')}," for s in plan.scripts]
    body.append("    ]")
    kwargs = ", ".join(f"{k}={v!r}" for k, v in plan.spawn_kwargs().items())
    body.append(f"    mesh = meshlog.spawn(scripts, {kwargs})")
    if plan.hanging_ranks:
        header = "from pytest_meshlog.strategies import wait_settled\n\n\n"
        body.append("    wait_settled(mesh)  # the scripts end, hanging ranks hang")
    else:
        header = ""
        body.append("    mesh.wait_scripts()")
    body.append("    mesh.stop().assert_clean()")
    return f"{header}def {name}(meshlog, fake_procs):\n" + "\n".join(body) + "\n"
