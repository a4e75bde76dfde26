"""Scripted fake mesh children: scripts as data, the child program, and the oracle side.

Driver side: build a `Script` (`script(seed=1).line().partial("tail")`, or the ready-made
ones on `FakeProcs`), write it as JSON, run `python -m fake_procs <script.json>` as a mesh
child, then ask `emitted(script, rank, record)` what reached fd 1/2 and
`expected_lines(raw, rank=..., prefix_with_rank=...)` what the stack must deliver.

Exports load lazily: the child program imports this package on every start and must not
pay for the driver's half (dataclasses, Faker).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .catalog import Catalog, FakeProcs, ScriptFactory, default_catalog
    from .content import FLAVOURS, Flavour, derive_seed
    from .executor import execute, progress_path
    from .expected import (
        MAX_LINE_BYTES,
        expected_lines,
        final_partial,
        frame_line,
        framed,
        split_raw,
    )
    from .library import (
        binary_writer,
        crasher,
        flooder,
        hanger,
        interleaver,
        long_liner,
        partial_line_writer,
        silent,
        slow_drip,
    )
    from .progress import (
        Emitted,
        Progress,
        ProgressError,
        WriteEntry,
        emitted,
        emitted_bytes,
        planned_bytes,
        read_progress,
    )
    from .render import tag_bytes
    from .runtime import Runtime
    from .scripts import Script, script
    from .steps import (
        CRASH_HOWS,
        MODES,
        STREAMS,
        AnyStep,
        Barrier,
        Close,
        Crash,
        CrashHow,
        Exit,
        Flood,
        Flush,
        Grandchild,
        Hang,
        Interleave,
        Line,
        Mode,
        Partial,
        Raw,
        ScriptError,
        Sleep,
        Step,
        Stream,
    )
    from .tags import Tag, find_tag, find_tags

_WHERE = {
    "catalog": ("Catalog", "FakeProcs", "ScriptFactory", "default_catalog"),
    "content": ("FLAVOURS", "Flavour", "derive_seed"),
    "progress": (
        "Emitted",
        "Progress",
        "ProgressError",
        "WriteEntry",
        "emitted",
        "emitted_bytes",
        "planned_bytes",
        "read_progress",
    ),
    "executor": ("execute", "progress_path"),
    "runtime": ("Runtime",),
    "expected": (
        "MAX_LINE_BYTES",
        "expected_lines",
        "final_partial",
        "frame_line",
        "framed",
        "split_raw",
    ),
    "library": (
        "binary_writer",
        "crasher",
        "flooder",
        "hanger",
        "interleaver",
        "long_liner",
        "partial_line_writer",
        "silent",
        "slow_drip",
    ),
    "render": ("tag_bytes",),
    "scripts": ("Script", "script"),
    "steps": (
        "CRASH_HOWS",
        "MODES",
        "STREAMS",
        "AnyStep",
        "Barrier",
        "Close",
        "Crash",
        "CrashHow",
        "Exit",
        "Flood",
        "Flush",
        "Grandchild",
        "Hang",
        "Interleave",
        "Line",
        "Mode",
        "Partial",
        "Raw",
        "ScriptError",
        "Sleep",
        "Step",
        "Stream",
    ),
    "tags": ("Tag", "find_tag", "find_tags"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = [
    "CRASH_HOWS",
    "FLAVOURS",
    "MAX_LINE_BYTES",
    "MODES",
    "STREAMS",
    "AnyStep",
    "Barrier",
    "Catalog",
    "Close",
    "Crash",
    "CrashHow",
    "Emitted",
    "Exit",
    "FakeProcs",
    "Flavour",
    "Flood",
    "Flush",
    "Grandchild",
    "Hang",
    "Interleave",
    "Line",
    "Mode",
    "Partial",
    "Progress",
    "ProgressError",
    "Raw",
    "Runtime",
    "Script",
    "ScriptError",
    "ScriptFactory",
    "Sleep",
    "Step",
    "Stream",
    "Tag",
    "WriteEntry",
    "binary_writer",
    "crasher",
    "default_catalog",
    "derive_seed",
    "emitted",
    "emitted_bytes",
    "execute",
    "expected_lines",
    "final_partial",
    "find_tag",
    "find_tags",
    "flooder",
    "frame_line",
    "framed",
    "hanger",
    "interleaver",
    "long_liner",
    "partial_line_writer",
    "planned_bytes",
    "progress_path",
    "read_progress",
    "script",
    "silent",
    "slow_drip",
    "split_raw",
    "tag_bytes",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'fake_procs' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
