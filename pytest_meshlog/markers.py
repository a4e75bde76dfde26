"""The harness's markers, validated at collection: a bad argument is a collection error."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from .faults import FAULT_KINDS, FAULTS, HOSTILE_ATTACKS, problem
from .report import RULES, BarrierExpectation, Rules
from .stack import ENVS, Env
from .stack.config import MAX_READ_LOG_BUFFER

__all__ = [
    "FAULT_KINDS",
    "HOSTILE_ATTACKS",
    "MARKERS",
    "MARKS",
    "Expectation",
    "Fault",
    "MarkerError",
    "MeshOptions",
    "TestMarks",
    "marks_of",
    "parse_marks",
]

MARKERS = {
    "meshlog": "meshlog(procs=, hosts=, env=, force_file_log=, aggregate_window_sec=, "
    "prefix_with_rank=, read_log_buffer=, stream_to_client=, rules='literal'|'strict'): mesh "
    "settings for one test, and how strictly a crash's losses are judged",
    "meshlog_fault": "meshlog_fault(kind, rank=0, **params): failure injection on top of the "
    "scripts; kinds: " + ", ".join(sorted(FAULT_KINDS)),
    "meshlog_expect": "meshlog_expect(lost_at_most=0, barrier='complete'|'timeout'): what the "
    "test expects instead of 'nothing lost, every barrier completes'",
    "meshlog_catalog": "a scenario of the built-in teardown catalog (added by --meshlog); "
    "select them alone with -m meshlog_catalog",
}  # fmt: skip


MAX_PROCS = 1024
"""The most children (and hosts) one mesh may have: each child is a process with pipes
and sockets, and a mistyped count would fork until the machine gives out."""


class MarkerError(ValueError):
    """A meshlog marker has an argument the harness does not understand."""


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise MarkerError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class MeshOptions:
    """`@pytest.mark.meshlog(...)`: per-test mesh settings (None = the session default)."""

    procs: int | None = None
    hosts: int = 1
    env: Env = "local"
    force_file_log: bool = False
    aggregate_window_sec: float | None = None
    prefix_with_rank: bool = True
    read_log_buffer: int = 100
    stream_to_client: bool = True
    rules: Rules = "literal"
    """How a crash's client losses are judged: `literal` (at most the last batch of each
    stream) or `strict` (nothing that reached the pipe)."""

    @classmethod
    def from_marker(
        cls, kwargs: dict[str, Any], args: tuple[Any, ...] = (), *, source: str = "meshlog marker"
    ) -> MeshOptions:
        """Validated options; a bad one is a `MarkerError` naming `source` (the marker, or
        `spawn()` for its arguments) and the value."""
        _check(not args, f"{source} takes keyword arguments only, got positional {args!r}")
        known = set(cls.__dataclass_fields__)
        for key in kwargs:
            _check(
                key in known,
                f"{source}: unknown argument {key!r} (known: {', '.join(sorted(known))})",
            )
        opts = cls(**kwargs)
        _check(
            opts.procs is None or (_is_int(opts.procs) and 1 <= opts.procs <= MAX_PROCS),
            f"{source}: procs={opts.procs!r} must be an int from 1 to {MAX_PROCS}",
        )
        _check(
            _is_int(opts.hosts) and 1 <= opts.hosts <= MAX_PROCS,
            f"{source}: hosts={opts.hosts!r} must be an int from 1 to {MAX_PROCS}",
        )
        _check(opts.env in ENVS, f"{source}: env={opts.env!r} is not one of {', '.join(ENVS)}")
        for flag in ("force_file_log", "prefix_with_rank", "stream_to_client"):
            _check(
                isinstance(getattr(opts, flag), bool),
                f"{source}: {flag}={getattr(opts, flag)!r} must be a bool",
            )
        w = opts.aggregate_window_sec
        _check(
            w is None
            or (isinstance(w, (int, float)) and not isinstance(w, bool) and 0 < w < math.inf),
            f"{source}: aggregate_window_sec={w!r} must be None or a finite number > 0",
        )
        _check(
            w is None or opts.stream_to_client,
            f"{source}: aggregate_window_sec={w!r} needs stream_to_client=True",
        )
        _check(
            _is_int(opts.read_log_buffer) and 1 <= opts.read_log_buffer <= MAX_READ_LOG_BUFFER,
            f"{source}: read_log_buffer={opts.read_log_buffer!r} must be an int from 1 to "
            f"{MAX_READ_LOG_BUFFER}",
        )
        _check(
            opts.rules in RULES,
            f"{source}: rules={opts.rules!r} is not one of {', '.join(RULES)}",
        )
        return opts  # fmt: skip


@dataclass(frozen=True)
class Fault:
    """`@pytest.mark.meshlog_fault(kind, rank=0, **params)`."""

    kind: str
    rank: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def param(self, name: str) -> Any:
        """A parameter as the marker set it, else its default (see `faults.FAULTS`)."""
        return self.params.get(name, FAULTS[self.kind].params[name])

    @classmethod
    def from_marker(cls, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Fault:
        _check(
            len(args) == 1,
            f"meshlog_fault marker takes one positional argument (the kind), got {args!r}",
        )
        kind = args[0]
        _check(
            kind in FAULT_KINDS,
            f"meshlog_fault marker: unknown fault kind {kind!r} (known: {', '.join(sorted(FAULT_KINDS))})",
        )
        params = dict(kwargs)
        rank = params.pop("rank", 0)
        _check(
            _is_int(rank) and rank >= 0, f"meshlog_fault marker: rank={rank!r} must be an int >= 0"
        )
        for key in params:
            _check(
                key in FAULT_KINDS[kind],
                f"meshlog_fault marker: {kind} takes no argument {key!r} (it takes: {', '.join(sorted(FAULT_KINDS[kind])) or 'only rank'})",
            )
        wrong = problem(kind, params)
        _check(wrong is None, f"meshlog_fault marker: {wrong}")
        return cls(kind, rank, params)  # fmt: skip


@dataclass(frozen=True)
class Expectation:
    """`@pytest.mark.meshlog_expect(...)`; the default is: nothing lost, every barrier completes."""

    lost_at_most: int = 0
    barrier: BarrierExpectation = "complete"

    @classmethod
    def from_marker(cls, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Expectation:
        _check(
            not args, f"meshlog_expect marker takes keyword arguments only, got positional {args!r}"
        )
        for key in kwargs:
            _check(
                key in ("lost_at_most", "barrier"),
                f"meshlog_expect marker: unknown argument {key!r} (known: barrier, lost_at_most)",
            )
        exp = cls(**kwargs)
        _check(
            _is_int(exp.lost_at_most) and exp.lost_at_most >= 0,
            f"meshlog_expect marker: lost_at_most={exp.lost_at_most!r} must be an int >= 0",
        )
        _check(
            exp.barrier in ("complete", "timeout"),
            f"meshlog_expect marker: barrier={exp.barrier!r} must be 'complete' or 'timeout'",
        )
        return exp  # fmt: skip


@dataclass(frozen=True)
class TestMarks:
    """All harness markers of one test, parsed."""

    options: MeshOptions
    faults: tuple[Fault, ...]
    expect: Expectation
    marker_args: Mapping[str, Any] = field(default_factory=dict)
    """What the `meshlog` marker itself set (the rest of `options` are defaults)."""

    def mesh_options(self, knobs: Mapping[str, Any]) -> MeshOptions:
        """`options` with the session's stack knobs (option, ini or environment) filling
        in what the marker did not set: the marker wins, then the session, then defaults."""
        return MeshOptions.from_marker({**knobs, **self.marker_args})


def parse_marks(marks: Iterable[pytest.Mark]) -> TestMarks:
    """Parse the (closest-first) marks of a test; raises MarkerError naming the bad value."""
    options: MeshOptions | None = None
    marker_args: dict[str, Any] = {}
    expect: Expectation | None = None
    faults: list[Fault] = []
    for mark in marks:
        if mark.name == "meshlog" and options is None:
            options = MeshOptions.from_marker(dict(mark.kwargs), tuple(mark.args))
            marker_args = dict(mark.kwargs)
        elif mark.name == "meshlog_fault":
            faults.append(Fault.from_marker(tuple(mark.args), dict(mark.kwargs)))
        elif mark.name == "meshlog_expect" and expect is None:
            expect = Expectation.from_marker(tuple(mark.args), dict(mark.kwargs))
    return TestMarks(options or MeshOptions(), tuple(faults), expect or Expectation(), marker_args)


MARKS = pytest.StashKey[TestMarks]()
"""Each test's parsed marks, stored while collecting (a bad one is a collection error)."""


def marks_of(item: pytest.Item) -> TestMarks:
    """The test's harness marks, parsed once; a bad one here is a usage error naming it."""
    marks = item.stash.get(MARKS, None)
    if marks is None:
        try:
            marks = parse_marks(item.iter_markers())
        except MarkerError as exc:
            raise pytest.UsageError(f"{item.nodeid}: {exc}") from None
        item.stash[MARKS] = marks
    return marks
