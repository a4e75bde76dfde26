"""Reading a Ray driver's console and its workers' log files back into rank, stream, line.

Console: with `log_to_driver=True` Ray's driver prints each line a worker wrote as
`(<actor or task name> pid=<pid>[, ip=<ip>]) <line>`, the label coloured unless
RAY_COLOR_PREFIX=0, worker stdout on the driver's stdout and stderr on its stderr. The
rank is the pid in Ray's label mapped to the actor that answered with that pid, never
anything in the line. Lines labelled `(raylet)`, `(gcs_server)` or `(autoscaler ...)` and
the driver's own log records are Ray's messages, kept apart; anything else is reported.

Files: each worker's fds 1 and 2 are `<session>/logs/worker-<id>-<job>-<pid>.out|.err`;
the pid in the name gives the rank. Ray writes its own marker lines into them
(`:job_id:`, `:actor_name:`, `:task_name:`, which its log monitor consumes); they are taken
out, everything else is the worker's bytes, as written.

With RAY_DEDUP_LOGS on (the catalog's aggregation scenarios) Ray prints a line that
other workers already printed something similar to (differing only in numbers) once per
window as `<line> [repeated Nx across cluster]`, N being the lines it stood for (lines of
one worker are never folded together); rows are counted and credited to ranks in rank
order, as for any aggregating stack.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fake_procs import expected_lines

from ..foreign.credit import credit_rows

STREAMS = ("stdout", "stderr")
_LABEL = re.compile(
    rb"^(?:\x1b\[[0-9;]*m)*\((?:(?P<name>[^()\s]+) )?pid=(?P<pid>[^,)\s]+)(?:, ip=[^)]*)?\)"
    rb"(?:\x1b\[[0-9;]*m)* ?"
)
_RAY_LABEL = re.compile(
    rb"^(?:\x1b\[[0-9;]*m)*\((?:raylet|gcs_server|runtime_env|autoscaler[^)]*)\)"
)
"""Lines Ray's driver prints for its own processes (pid `raylet`, `autoscaler +<time>`)."""
_ESC = re.compile(rb"\x1b\[[0-9;]*m")
_REPEATED = re.compile(rb" \[repeated (\d+)x across cluster\]$")
_DEDUP_NOTE = re.compile(rb"\(Ray deduplicates logs by default\..*\)$")
RAY_OWN = (
    re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\t[A-Z]+ \S+ -- "),  # the driver's logger
    re.compile(rb"^Token authentication is enabled for this Ray cluster\."),
)
"""What Ray's driver itself prints on its console (not the workers' output)."""
MARKERS = (b":job_id:", b":actor_name:", b":task_name:")
WORKER_FILE = re.compile(r"^worker-[0-9a-f]+-[0-9a-f]+-(\d+)\.(out|err)$")


@dataclass
class Parsed:
    delivered: dict[tuple[int, str], list[bytes]] = field(default_factory=dict)
    ray_messages: list[tuple[str, bytes]] = field(default_factory=list)
    """Ray's own lines on the console (its logger, raylet/gcs/autoscaler lines)."""
    unattributed: list[tuple[str, bytes]] = field(default_factory=list)
    """Console lines that are neither Ray's nor labelled with a pid of this mesh."""


def parse_console(
    paths: Sequence[Path],
    pids: Mapping[int, int],
    ranks: Sequence[int],
    *,
    prefix_with_rank: bool,
    aggregated: bool,
    emitted: Callable[[], dict[tuple[int, str], int]],
) -> Parsed:
    """`paths`: the driver's stdout and stderr; `pids`: worker pid -> rank."""
    out = Parsed(delivered={(r, s): [] for r in ranks for s in STREAMS})
    for stream, path in zip(STREAMS, paths, strict=True):
        data = path.read_bytes() if path.exists() else b""
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        counted: list[tuple[int, bytes]] = []
        for line in lines:
            m = _LABEL.match(line)
            if m is None:
                if _RAY_LABEL.match(line) or any(p.match(line) for p in RAY_OWN):
                    out.ray_messages.append((stream, line))
                else:
                    out.unattributed.append((stream, line))
                continue
            text = line[m.end() :]
            pid = m.group("pid")
            rank = pids.get(int(pid)) if pid.isdigit() else None
            if rank is None:
                out.unattributed.append((stream, line))
                continue
            if aggregated:
                plain = _DEDUP_NOTE.sub(b"", _ESC.sub(b"", text)).rstrip(b" ")
                rep = _REPEATED.search(plain)
                # a row stands for the N similar lines it suppressed, not one more
                counted.append((int(rep.group(1)), plain[: rep.start()]) if rep else (1, plain))
                continue
            out.delivered[rank, stream].append(b"[%d] " % rank + text if prefix_with_rank else text)
        if aggregated:
            credit_rows(out.delivered, stream, ranks, counted, emitted())
    return out


def worker_files(logs_dir: Path, pids: Mapping[int, int]) -> dict[tuple[int, str], Path]:
    """(rank, stream) -> the worker log file Ray wrote for that rank's worker."""
    out: dict[tuple[int, str], Path] = {}
    if not logs_dir.is_dir():
        return out
    for path in logs_dir.iterdir():
        m = WORKER_FILE.match(path.name)
        if m is not None and int(m.group(1)) in pids:
            out[pids[int(m.group(1))], "stdout" if m.group(2) == "out" else "stderr"] = path
    return out


def file_bytes(path: Path) -> bytes:
    """A worker file's bytes without Ray's marker lines: what the worker wrote to the fd."""
    data = path.read_bytes() if path.exists() else b""
    if not data.startswith(MARKERS) and b"\n:" not in data:
        return data
    lines = data.split(b"\n")
    return b"\n".join(line for line in lines if not line.startswith(MARKERS))


def file_lines(path: Path, rank: int, *, prefix_with_rank: bool) -> list[bytes]:
    """A worker file's lines, framed as the oracle frames what the worker emitted (UTF-8
    with replacement, a CRLF ending is a line end, the 4096-byte cut, the final partial
    line counts): the file is the worker's raw stream, so it is judged byte for byte."""
    return expected_lines(file_bytes(path), rank=rank, prefix_with_rank=prefix_with_rank)
