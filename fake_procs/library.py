"""Ready-made scripts (SPEC 3.2). All rank-free: the rank only exists at run time.

Each takes `seed=` for its generated content; `FakeProcs` passes a seed derived from the
test's seed so every script in a test differs yet replays from the printed seed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec

from .content import binary_records
from .scripts import Script, script
from .steps import CrashHow, Mode, ScriptError, Stream

P = ParamSpec("P")

_STEP_FIELDS = {"n": "lines", "seconds": "interval", "text": "tail"}
"""A step's argument -> the ready-made script's parameter it came from (when renamed)."""


def _in_user_terms(
    renames: dict[str, str] | None = None,
) -> Callable[[Callable[P, Script]], Callable[P, Script]]:
    """Errors of the steps a ready-made script builds are reported as its own parameter:
    `crasher(how='sigfoo')`, not a step number the user never wrote."""
    fields = {**_STEP_FIELDS, **(renames or {})}

    def wrap(build: Callable[P, Script]) -> Callable[P, Script]:
        @functools.wraps(build)
        def checked(*args: P.args, **kwargs: P.kwargs) -> Script:
            try:
                return build(*args, **kwargs)
            except ScriptError as exc:
                if exc.problem is None:
                    raise
                name, value, why = exc.problem
                raise ScriptError(
                    f"{build.__name__}({fields.get(name, name)}={value!r}): {why}"
                ) from None

        return checked

    return wrap


def _count(name: str, who: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ScriptError(f"{who}: {name}={value!r} must be an integer >= 0")
    return value


@_in_user_terms()
def crasher(after_lines: int = 3, how: CrashHow = "exit", *, seed: int = 0) -> Script:
    """`after_lines` tagged stdout lines, then dies `how` (exit: os._exit(1), or a signal)."""
    s = script(seed, name="crasher")
    for _ in range(_count("after_lines", "crasher", after_lines)):
        s = s.line()
    return s.crash(how)


@_in_user_terms()
def partial_line_writer(lines: int = 3, tail: str | None = None, *, seed: int = 0) -> Script:
    """Tagged lines, then `tail` with no newline (a tagged sentence when None), then ends."""
    s = script(seed, name="partial_line_writer")
    for _ in range(_count("lines", "partial_line_writer", lines)):
        s = s.line()
    return s.partial(tail)


@_in_user_terms()
def interleaver(lines: int = 20, *, seed: int = 0, mode: Mode = "fd") -> Script:
    """`lines` tagged lines alternating stdout/stderr."""
    return script(seed, name="interleaver").interleave(lines, mode=mode)


@_in_user_terms()
def flooder(
    lines: int = 1000,
    line_bytes: int = 100,
    *,
    seed: int = 0,
    stream: Stream = "stdout",
    mode: Mode = "fd",
) -> Script:
    """`lines` tagged lines of `line_bytes` bytes, as fast as the pipe takes them."""
    return script(seed, name="flooder").flood(lines, line_bytes, stream=stream, mode=mode)


@_in_user_terms({"line_bytes": "nbytes"})
def long_liner(nbytes: int = 10_000, *, seed: int = 0, stream: Stream = "stdout") -> Script:
    """One tagged line of `nbytes` bytes of 2/3/4-byte characters (truncated by the stack
    when over 4096), then a normal tagged line to show framing resumes."""
    s = script(seed, name="long_liner", flavour="unicode")
    return s.flood(1, nbytes, stream=stream).line(stream=stream)


@_in_user_terms()
def binary_writer(lines: int = 8, *, seed: int = 0, stream: Stream = "stdout") -> Script:
    """Tagged records of invalid UTF-8, NUL, lone CR and CRLF endings, as raw bytes."""
    s = script(seed, name="binary_writer")
    for record in binary_records(seed, _count("lines", "binary_writer", lines)):
        s = s.raw(record, stream=stream, tag=True)
    return s


@_in_user_terms()
def slow_drip(lines: int = 10, interval: float = 0.05, *, seed: int = 0) -> Script:
    """A tagged line every `interval` seconds."""
    s = script(seed, name="slow_drip")
    for _ in range(_count("lines", "slow_drip", lines)):
        s = s.line().sleep(interval)
    return s


@_in_user_terms()
def silent(*, seed: int = 0) -> Script:
    """Writes nothing and ends: EOF with no data, no partial line."""
    return script(seed, name="silent")


@_in_user_terms()
def hanger(lines: int = 1, *, seed: int = 0) -> Script:
    """A few tagged lines, then blocks until the runtime stops it."""
    s = script(seed, name="hanger")
    for _ in range(_count("lines", "hanger", lines)):
        s = s.line()
    return s.hang()
