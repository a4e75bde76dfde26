"""The step vocabulary of a fake child, and its validation.

Steps are frozen dataclasses so scripts are plain data. They are checked when they are put
into a `Script` (see scripts.py), in the driver, so a bad script fails at build time with a
`ScriptError` naming the step and the value instead of as a dead child later.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal, TypeAlias, Union, get_args

Stream = Literal["stdout", "stderr"]
Mode = Literal["fd", "buffered"]
CrashHow = Literal["exit", "sigkill", "sigsegv", "abort"]

STREAMS: tuple[Stream, ...] = ("stdout", "stderr")
MODES: tuple[Mode, ...] = ("fd", "buffered")
CRASH_HOWS: tuple[CrashHow, ...] = ("exit", "sigkill", "sigsegv", "abort")

MAX_LINE_BYTES_ARG = 16 * 1024 * 1024
"""Upper bound for `line_bytes`: a typo like 10**9 should fail at build time, not OOM."""


Problem: TypeAlias = tuple[str, object, str]
"""(field, value, what is wrong)."""


class ScriptError(ValueError):
    """A script that cannot run: names the step (index and kind) and the bad value."""

    def __init__(
        self,
        message: str,
        *,
        index: int | None = None,
        kind: str | None = None,
        problem: Problem | None = None,
    ) -> None:
        where = "script" if index is None else f"step {index} ({kind or '?'})"
        super().__init__(f"{where}: {message}")
        self.index = index
        self.kind = kind
        self.problem = problem  # (field, value, why) when one argument of the step is bad


def _check_int(name: str, value: object, lo: int, hi: int | None = None) -> Iterator[Problem]:
    if isinstance(value, bool) or not isinstance(value, int):
        yield name, value, "must be an integer"
    elif value < lo or (hi is not None and value > hi):
        yield name, value, f"must be in {lo}..{hi}" if hi is not None else f"must be >= {lo}"


def _check_seconds(name: str, value: object, *, positive: bool) -> Iterator[Problem]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        yield name, value, "must be a number of seconds"
    elif not math.isfinite(value) or value < 0 or (positive and value == 0):
        yield name, value, "must be finite and " + ("> 0" if positive else ">= 0")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> Iterator[Problem]:
    if value not in choices:
        yield name, value, f"must be one of {', '.join(choices)}"


def _check_text(name: str, value: object) -> Iterator[Problem]:
    if not isinstance(value, str):
        yield name, value, "must be a str"
        return
    if "\n" in value:
        yield name, value, "must not contain a newline (use one step per line)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        yield name, value, "is not encodable as UTF-8 (use raw() for arbitrary bytes)"


def _check_bool(name: str, value: object) -> Iterator[Problem]:
    if not isinstance(value, bool):
        yield name, value, "must be a bool"


class Step:
    """Base of all steps. `kind` is the JSON `op`; `streams()` are the streams it writes."""

    kind: ClassVar[str]
    terminal: ClassVar[bool] = False

    def problems(self) -> Iterator[Problem]:
        return iter(())

    def writes(self) -> tuple[Stream, ...]:
        return ()

    def line_count(self) -> int:
        """How many complete lines (newlines) the step writes."""
        return 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.kind}
        for f in fields(self):  # type: ignore[arg-type]
            out[f.name] = getattr(self, f.name)
        return out


@dataclass(frozen=True, kw_only=True)
class _Write(Step):
    stream: Stream = "stdout"
    mode: Mode = "fd"

    def problems(self) -> Iterator[Problem]:
        yield from _check_choice("stream", self.stream, STREAMS)
        yield from _check_choice("mode", self.mode, MODES)

    def writes(self) -> tuple[Stream, ...]:
        return (self.stream,)


@dataclass(frozen=True, kw_only=True)
class Line(_Write):
    """A complete line: `text` + newline (a tag first when `tag`)."""

    kind: ClassVar[str] = "line"
    text: str = ""
    tag: bool = False

    def problems(self) -> Iterator[Problem]:
        yield from _check_text("text", self.text)
        yield from _check_bool("tag", self.tag)
        yield from super().problems()

    def line_count(self) -> int:
        return 1


@dataclass(frozen=True, kw_only=True)
class Partial(_Write):
    """Text without a newline: becomes the final partial line if nothing follows it."""

    kind: ClassVar[str] = "partial"
    text: str = ""
    tag: bool = False

    def problems(self) -> Iterator[Problem]:
        yield from _check_text("text", self.text)
        yield from _check_bool("tag", self.tag)
        yield from super().problems()


@dataclass(frozen=True, kw_only=True)
class Raw(_Write):
    """Arbitrary bytes, written as they are (invalid UTF-8, CR, NUL and newlines included)."""

    kind: ClassVar[str] = "raw"
    data: bytes = b""
    tag: bool = False

    def problems(self) -> Iterator[Problem]:
        if not isinstance(self.data, bytes):
            yield "data", self.data, "must be bytes"
        yield from _check_bool("tag", self.tag)
        yield from super().problems()

    def line_count(self) -> int:
        return self.data.count(b"\n")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["b64"] = binascii.b2a_base64(out.pop("data"), newline=False).decode("ascii")
        return out


@dataclass(frozen=True, kw_only=True)
class Flood(_Write):
    """`n` generated tagged lines of `line_bytes` bytes each (newline excluded), written fast."""

    kind: ClassVar[str] = "flood"
    n: int = 0
    line_bytes: int = 80

    def problems(self) -> Iterator[Problem]:
        yield from _check_int("n", self.n, 0)
        yield from _check_int("line_bytes", self.line_bytes, 1, MAX_LINE_BYTES_ARG)
        yield from super().problems()

    def line_count(self) -> int:
        return self.n


@dataclass(frozen=True, kw_only=True)
class Interleave(Step):
    """`n` generated tagged lines alternating stdout, stderr, stdout, ...

    `line_bytes=None` writes corpus sentences as they are; a number pads/cuts to it.
    """

    kind: ClassVar[str] = "interleave"
    n: int = 0
    line_bytes: int | None = None
    mode: Mode = "fd"

    def problems(self) -> Iterator[Problem]:
        yield from _check_int("n", self.n, 0)
        if self.line_bytes is not None:
            yield from _check_int("line_bytes", self.line_bytes, 1, MAX_LINE_BYTES_ARG)
        yield from _check_choice("mode", self.mode, MODES)

    def writes(self) -> tuple[Stream, ...]:
        return STREAMS[: min(self.n, 2)] if isinstance(self.n, int) else STREAMS

    def line_count(self) -> int:
        return self.n


@dataclass(frozen=True, kw_only=True)
class Flush(Step):
    """Flush the Python-level buffer of one stream (or both when `stream` is None)."""

    kind: ClassVar[str] = "flush"
    stream: Stream | None = None

    def problems(self) -> Iterator[Problem]:
        if self.stream is not None:
            yield from _check_choice("stream", self.stream, STREAMS)


@dataclass(frozen=True, kw_only=True)
class Sleep(Step):
    """Pause; ends early when the runtime starts stopping."""

    kind: ClassVar[str] = "sleep"
    seconds: float = 0.0

    def problems(self) -> Iterator[Problem]:
        yield from _check_seconds("seconds", self.seconds, positive=False)


@dataclass(frozen=True, kw_only=True)
class Close(Step):
    """Close a stream early: flush its buffer, then point the fd at /dev/null (tee sees EOF)."""

    kind: ClassVar[str] = "close"
    stream: Stream = "stdout"

    def problems(self) -> Iterator[Problem]:
        yield from _check_choice("stream", self.stream, STREAMS)


@dataclass(frozen=True, kw_only=True)
class Barrier(Step):
    """Wait for the next barrier ack (`rt.wait_barrier(timeout)`), then go on either way."""

    kind: ClassVar[str] = "barrier"
    timeout: float = 30.0

    def problems(self) -> Iterator[Problem]:
        yield from _check_seconds("timeout", self.timeout, positive=True)


@dataclass(frozen=True, kw_only=True)
class Exit(Step):
    """End the process at once with `os._exit(code)`: Python buffers are NOT flushed."""

    kind: ClassVar[str] = "exit"
    terminal: ClassVar[bool] = True
    code: int = 0

    def problems(self) -> Iterator[Problem]:
        yield from _check_int("code", self.code, 0, 255)


@dataclass(frozen=True, kw_only=True)
class Crash(Step):
    """Die abnormally: `exit` (os._exit(1)), `sigkill`, `sigsegv` or `abort` (SIGABRT)."""

    kind: ClassVar[str] = "crash"
    terminal: ClassVar[bool] = True
    how: CrashHow = "sigkill"

    def problems(self) -> Iterator[Problem]:
        yield from _check_choice("how", self.how, CRASH_HOWS)


@dataclass(frozen=True, kw_only=True)
class Grandchild(Step):
    """Start a grandchild process that inherits `stream` (or "both") and keeps it open for
    `seconds` while writing nothing, as a leaked helper or daemon would. The tee sees no
    EOF on that stream until the grandchild ends: the stack must notice, name it, and end
    it with the mesh (a child's descendants belong to its mesh)."""

    kind: ClassVar[str] = "grandchild"
    stream: Literal["stdout", "stderr", "both"] = "stdout"
    seconds: float = 60.0

    def problems(self) -> Iterator[Problem]:
        yield from _check_choice("stream", self.stream, (*STREAMS, "both"))
        yield from _check_seconds("seconds", self.seconds, positive=True)


@dataclass(frozen=True, kw_only=True)
class Hang(Step):
    """Never finish on its own; returns only once the runtime is stopping."""

    kind: ClassVar[str] = "hang"
    terminal: ClassVar[bool] = True


AnyStep: TypeAlias = Union[  # noqa: UP007 (mypy targets 3.10: no `|` between classes here)
    Line,
    Partial,
    Raw,
    Flood,
    Interleave,
    Flush,
    Sleep,
    Close,
    Barrier,
    Grandchild,
    Exit,
    Crash,
    Hang,
]

_ALL_STEPS: tuple[type[AnyStep], ...] = get_args(AnyStep)
STEP_TYPES: dict[str, type[AnyStep]] = {cls.kind: cls for cls in _ALL_STEPS}


def step_from_dict(index: int, raw: object) -> AnyStep:
    """Decode one step's JSON form; any problem is a `ScriptError` for step `index`."""
    if not isinstance(raw, Mapping):
        raise ScriptError(f"must be a JSON object, got {raw!r}", index=index)
    op = raw.get("op")
    cls = STEP_TYPES.get(op) if isinstance(op, str) else None
    if cls is None:
        raise ScriptError(
            f"unknown step kind {op!r} (known: {', '.join(sorted(STEP_TYPES))})",
            index=index,
            kind=str(op),
        )
    args = {k: v for k, v in raw.items() if k != "op"}
    if cls is Raw and "b64" in args:
        b64 = args.pop("b64")
        try:
            args["data"] = base64.b64decode(b64, validate=True) if isinstance(b64, str) else b64
        except (binascii.Error, ValueError):
            raise ScriptError(f"b64={b64!r} is not base64", index=index, kind=op) from None
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ScriptError(f"unknown argument(s) {', '.join(unknown)}", index=index, kind=op)
    step = cls(**args)
    check_step(index, step)
    return step


def check_step(index: int, step: object) -> None:
    """Raise `ScriptError` if the step itself (not its place in the script) is bad."""
    if not isinstance(step, Step) or type(step) not in STEP_TYPES.values():
        raise ScriptError(f"not a step: {step!r}", index=index)
    for name, value, why in step.problems():
        raise ScriptError(
            f"{name}={value!r} {why}", index=index, kind=step.kind, problem=(name, value, why)
        )
