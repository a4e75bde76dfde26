"""Reading torchrun's console and log files back into rank, stream and line.

With `--tee` torchrun's agent tails each rank's log file and writes every line it reads
to its own stdout (the rank's stdout.log) or stderr (stderr.log) behind a label,
`[default<r>]:` (role `default`, local rank r). The rank comes from that label, never from
the line. The tailer reads in text mode: when it reaches the end of the file in the
middle of a line it writes the piece it has, label and all, with no newline after it, so
the next label (of any rank) can follow on the same console line. Every label therefore
starts a new piece; a piece ends at a newline or at the next label. Console text before
the first label of a line is torchrun's own (its banner, warnings, failure report).

The per-rank files carry no label: the rank is the directory torchrun put them in
(`<log-dir>/<run id>/attempt_<n>/<local rank>/{stdout,stderr}.log`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..report import Stream

STREAMS: tuple[Stream, Stream] = ("stdout", "stderr")
LABEL = re.compile(rb"\[default(\d+)\]:")


@dataclass
class Console:
    """The console, read back: each rank's pieces per stream, torchrun's own lines, and
    labelled pieces of a rank this mesh does not have."""

    delivered: dict[tuple[int, str], list[bytes]] = field(default_factory=dict)
    own: list[tuple[str, bytes]] = field(default_factory=list)
    unattributed: list[tuple[str, bytes]] = field(default_factory=list)


def rank_prefix(rank: int) -> bytes:
    """The harness's `[rank] ` prefix, which torchrun spells as its label (console) or its
    directory (files); used when the mesh asks for `prefix_with_rank`."""
    return b"[%d] " % rank


def parse_console(paths: Sequence[Path], ranks: Sequence[int], prefix_with_rank: bool) -> Console:
    out = Console(delivered={(r, s): [] for r in ranks for s in STREAMS})
    for stream, path in zip(STREAMS, paths, strict=True):
        data = path.read_bytes() if path.exists() else b""
        for line in data.split(b"\n") if data else ():
            labels = list(LABEL.finditer(line))
            head = line if not labels else line[: labels[0].start()]
            if head:
                out.own.append((stream, head))
            for i, m in enumerate(labels):
                end = labels[i + 1].start() if i + 1 < len(labels) else len(line)
                rank, piece = int(m.group(1)), line[m.end() : end]
                if rank not in ranks:
                    out.unattributed.append((stream, line[m.start() : end]))
                    continue
                out.delivered[rank, stream].append(
                    rank_prefix(rank) + piece if prefix_with_rank else piece
                )
    return out


def rank_files(log_dir: Path, ranks: Sequence[int]) -> dict[tuple[int, Stream], list[Path]]:
    """torchrun's log files of each rank and stream, every attempt (in attempt order)."""
    out: dict[tuple[int, Stream], list[Path]] = {(r, s): [] for r in ranks for s in STREAMS}
    for attempt in sorted(log_dir.glob("*/attempt_*")):
        for rank in ranks:
            for stream in STREAMS:
                path = attempt / str(rank) / f"{stream}.log"
                if path.exists():
                    out[rank, stream].append(path)
    return out


def write_views(
    files: dict[tuple[int, Stream], list[Path]], dest: Path, prefix_with_rank: bool
) -> list[str]:
    """One `rank<r>.<stream>` file per rank and stream, as the evidence reads per-proc
    files: the same bytes, each line behind the rank's prefix when the mesh asks for one
    (the rank is the file's directory). A file that does not end with a newline ends with
    the rank's final partial line, written by the rank itself (no framer can tear it):
    the view ends that line, as the evidence reads only whole lines."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for (rank, stream), paths in sorted(files.items()):
        if not paths:
            continue
        target = dest / f"rank{rank}.{stream}"
        with open(target, "wb") as w:
            for path in paths:
                data = path.read_bytes()
                if prefix_with_rank and data:
                    pre = rank_prefix(rank)
                    body = data[:-1] if data.endswith(b"\n") else data
                    data = pre + body.replace(b"\n", b"\n" + pre) + data[len(body) :]
                w.write(data if not data or data.endswith(b"\n") else data + b"\n")
        out.append(str(target))
    return out


def console_problems(console: Console) -> list[str]:
    """Labelled console text of a rank the mesh does not have: reported, never dropped."""
    if not console.unattributed:
        return []
    shown = "; ".join(f"{s}: {line[:120]!r}" for s, line in console.unattributed[:3])
    return [
        f"{len(console.unattributed)} piece(s) of torchrun's console carry the label of a "
        f"rank this mesh does not have: {shown}"
    ]
