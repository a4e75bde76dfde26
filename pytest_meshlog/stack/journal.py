"""The per-mesh teardown journal: one JSON-lines file per process.

Each event is one unbuffered `os.write` to an O_APPEND file, so an event written right
before a SIGKILL is on disk. Events are per teardown step or per batch, never per line,
which keeps the journal off the hot path. `time.monotonic()` is system-wide on Linux,
so events of different processes sort onto one timeline.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

Event = dict[str, Any]


class Journal:
    """Append-only event writer for one process (`src` is "driver", "host0", "rank3"...)."""

    def __init__(self, directory: str | os.PathLike[str] | None, src: str) -> None:
        self.src = src
        self._fd: int | None = None
        if directory is not None:
            path = os.path.join(directory, f"{src}.jsonl")
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def __call__(self, ev: str, **fields: Any) -> None:
        if self._fd is None:
            return
        record = {"t": time.monotonic(), "src": self.src, "ev": ev, **fields}
        os.write(self._fd, (json.dumps(record, default=_jsonable) + "\n").encode())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


def read_journal(directory: str | os.PathLike[str]) -> list[Event]:
    """All events of all processes, in time order; a torn last line (killed writer) is skipped."""
    events: list[Event] = []
    root = Path(directory)
    if not root.is_dir():
        return events
    for path in sorted(root.glob("*.jsonl")):
        for raw in path.read_bytes().splitlines():
            try:
                events.append(json.loads(raw))
            except ValueError:
                continue
    events.sort(key=lambda e: e["t"])
    return events
