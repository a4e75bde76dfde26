"""Reading a Monarch driver's terminal output back into rank, stream and line.

The helper's stdout/stderr hold two writers, as a user's terminal does: Monarch's client
prints each forwarded line as `[{hostname} {proc_id}] {line}` (one write per line), and the
local host's console tee writes the children's raw bytes, partial lines included. A client
line can therefore follow a console fragment on the same line; it is found by its prefix,
whose proc id names the mesh and the proc index (`{mesh}-{rank}<...>@...`), so the rank
comes from Monarch's own label, never from the line's content. Everything that is neither
a client line nor part of an aggregate block is console output.

With an aggregation window Monarch prints blocks of `[N similar log lines] text` rows
that merge ranks: only the per-stream counts are observable, and SPEC 3.5 judges that
mode by counts. They are credited to ranks in rank order up to what each rank emitted;
a surplus goes to rank 0 and shows as lines nobody emitted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..foreign.credit import credit_rows
from ..report import Stream

STREAMS: tuple[Stream, Stream] = ("stdout", "stderr")
_ESC = re.compile(rb"\x1b\[[0-9;]*m")
_AGG_START = re.compile(rb"^>>> Aggregated Logs \(.*\) >>>$")
_AGG_END = re.compile(rb"^<<< Aggregated Logs \(.*\) <<<$")
_AGG_ROW = re.compile(rb"^\[(\d+) similar log lines\] (.*)$", re.S)


@dataclass
class Parsed:
    delivered: dict[tuple[int, str], list[bytes]] = field(default_factory=dict)
    console: dict[str, bytes] = field(default_factory=dict)
    unattributed: list[tuple[str, bytes]] = field(default_factory=list)
    aggregate_rows: dict[str, int] = field(default_factory=dict)


def client_prefix(mesh: str) -> re.Pattern[bytes]:
    """`[host mesh-3<id>@mesh-3<id>.ipc://@addr] `: group 1 is the proc index."""
    return re.compile(rb"\[[^\s\]]+ " + re.escape(mesh.encode()) + rb"-(\d+)<[^>\s]*>@[^\s\]]*\] ")


def parse_output(
    paths: Sequence[Path],
    mesh: str,
    ranks: Sequence[int],
    *,
    aggregated: bool,
    emitted: Callable[[], dict[tuple[int, str], int]],
) -> Parsed:
    out = Parsed(delivered={(r, s): [] for r in ranks for s in STREAMS})
    prefix = client_prefix(mesh)
    for stream, path in zip(STREAMS, paths, strict=True):
        data = path.read_bytes() if path.exists() else b""
        console = bytearray()
        counted: list[tuple[int, bytes]] = []
        in_block = after_block = False
        lines = data.split(b"\n")
        for i, line in enumerate(lines):
            last = i == len(lines) - 1
            plain = _ESC.sub(b"", line)
            if aggregated and _AGG_START.match(plain):
                in_block = True
                continue
            if after_block and line == b"" and not last:
                after_block = False  # the block's own trailing newline (println! of it)
                continue
            after_block = False
            if in_block:
                if _AGG_END.match(plain):
                    in_block = False
                    after_block = True
                elif (row := _AGG_ROW.match(plain)) is not None:
                    counted.append((int(row.group(1)), row.group(2)))
                else:
                    out.unattributed.append((stream, line))
                continue
            m = prefix.search(line)
            if m is None:
                console += line if last else line + b"\n"
                continue
            console += line[: m.start()]
            rank = int(m.group(1))
            if rank in ranks and not aggregated:
                out.delivered[rank, stream].append(line[m.end() :])
            else:
                out.unattributed.append((stream, line))
        out.console[stream] = bytes(console)
        if aggregated:
            out.aggregate_rows[stream] = sum(n for n, _ in counted)
            credit_rows(out.delivered, stream, ranks, counted, emitted())
    return out


MONARCH_OWN = (re.compile(rb"^Monarch internal logs are being written to .*\n", re.M),)
"""Lines Monarch itself prints on the driver's terminal (not the children's output)."""
_UNHANDLED = b"Unhandled monarch error on the root actor"
_PANIC = re.compile(rb"thread '[^']*' \(\d+\) panicked at ([^\n]*)\n([^\n]*)")


def output_problems(parsed: Parsed, emitted_bytes: dict[Stream, int]) -> list[str]:
    """Lines nobody can be credited with; Monarch's own failure messages; and a console
    tee that did not pass on exactly the bytes the children wrote (compared per stream:
    the console carries no rank; not compared where Monarch's messages interleave)."""
    out = []
    if parsed.unattributed:
        shown = "; ".join(f"{s}: {line[:120]!r}" for s, line in parsed.unattributed[:3])
        out.append(
            f"{len(parsed.unattributed)} line(s) of Monarch's client output could not be "
            f"attributed to a rank of this mesh: {shown}"
        )
    for stream in STREAMS:
        console = parsed.console.get(stream, b"")
        for pattern in MONARCH_OWN:
            console = pattern.sub(b"", console)
        compare = True
        at = console.find(_UNHANDLED)
        if at >= 0:  # the driver's last words: everything after it is Monarch's report
            report = console[at:].split(b"\n")
            out.append(
                "Monarch's driver stopped on an unhandled supervision error: "
                + " / ".join(x.strip().decode("utf-8", "replace") for x in report[1:3])
            )
            console = console[:at]
        for m in _PANIC.finditer(console):
            compare = False
            where, what = (g.decode("utf-8", "replace") for g in m.groups())
            out.append(f"Monarch panicked in the driver at {where}: {what}")
        if compare and len(console) != emitted_bytes.get(stream, 0):
            out.append(
                f"console tee ({stream}): the driver's terminal got {len(console)} bytes of "
                f"child output, the children wrote {emitted_bytes.get(stream, 0)} "
                f"(start: {console[:80]!r})"
            )
    return out
