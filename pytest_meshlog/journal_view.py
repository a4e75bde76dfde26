"""Reading the teardown journal for a report: what the text report (`report.py`) and the
HTML report (`html_report.py`) share, so both show and blame the same events.

Works on plain event mappings (`{"t": ..., "src": ..., "ev": ..., **fields}`), as read from
the journal or rebuilt from JSON by the xdist controller; an event without a usable time is
skipped, never fatal.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .stack import Ev

Event = Mapping[str, Any]

LOSS_CAUSES = (Ev.SEND_SKIPPED, Ev.FORWARDER_LOST, Ev.CHILD_KILLED, Ev.CHILD_EXITED, Ev.EOF)
"""The journal events that explain lost lines of a rank and stream, most telling first: a
send that was skipped, the forwarder lost, the child killed, its exit, else its EOF (the
journal does not time single lines)."""

_NOT_FIELDS = ("t", "src", "ev")


def event_time(event: Event) -> float | None:
    t = event.get("t")
    if isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t):
        return float(t)
    return None


def timed(journal: Iterable[Event]) -> list[tuple[float, Event]]:
    """Events with a usable time, in time order (a torn or odd event is skipped)."""
    out = [(t, ev) for ev in journal if (t := event_time(ev)) is not None]
    out.sort(key=lambda x: x[0])
    return out


def event_rank(event: Event) -> int | None:
    rank = event.get("rank")
    return rank if isinstance(rank, int) and not isinstance(rank, bool) else None


def lane_of(event: Event) -> str:
    """Events about one rank belong to its lane whoever wrote them; the rest to their
    writer's (`driver`, `host0`, `rank3`, ...)."""
    src = str(event.get("src", "?"))
    rank = event_rank(event)
    if rank is not None and not src.startswith("rank"):
        return f"rank{rank}"
    return src


def concerns(event: Event, rank: int) -> bool:
    """Whether an event is about `rank`, or about no rank in particular."""
    if "rank" in event:
        return bool(event["rank"] == rank)
    src = str(event.get("src", ""))
    if src.startswith("rank"):
        return src == f"rank{rank}"
    return True


def fields_text(event: Event) -> str:
    """An event's own fields as `key=value` words (time, writer and name left out)."""
    return " ".join(f"{k}={v}" for k, v in event.items() if k not in _NOT_FIELDS)


def blame(journal: Iterable[Event], rank: int, stream: str | None) -> Event | None:
    """The event that best explains a problem (lost lines) of `rank` and `stream`: the
    earliest event of the first kind in `LOSS_CAUSES` the journal has for them (an event
    without a stream concerns both), else the rank's last event, else None."""
    events = timed(journal)
    for name in LOSS_CAUSES:
        for _, ev in events:
            if (
                ev.get("ev") == name
                and event_rank(ev) == rank
                and ev.get("stream", stream) == stream
            ):
                return ev
    mine = [ev for _, ev in events if lane_of(ev) == f"rank{rank}"]
    return mine[-1] if mine else None


def blame_time(journal: Sequence[Event], rank: int, stream: str | None) -> float | None:
    """When the event `blame` names happened (None: the journal has nothing on the rank)."""
    ev = blame(journal, rank, stream)
    return None if ev is None else event_time(ev)


def timeline_text(
    journal: Sequence[Event], around: float | None = None, width: int = 8, rank: int | None = None
) -> str:
    """The journal, one event a line, times in ms since the first event.

    With `around` (a journal time) only `width` events either side of it are shown and
    the nearest is marked `>`; with `rank` only that rank's events and global ones.
    """
    events = [e for e in journal if rank is None or concerns(e, rank)]
    if not events:
        return "    (journal is empty)"
    t0 = float(journal[0]["t"])
    mark = -1
    lo, hi = 0, len(events)
    if around is not None:
        mark = min(range(len(events)), key=lambda i: abs(float(events[i]["t"]) - around))
        lo, hi = max(0, mark - width), min(len(events), mark + width + 1)
    rows = [_event_row(e, t0, i == mark) for i, e in enumerate(events[lo:hi], lo)]
    if lo:
        rows.insert(0, f"      ... {lo} earlier event{'s' * (lo != 1)}")
    if hi < len(events):
        rows.append(f"      ... {len(events) - hi} later event{'s' * (len(events) - hi != 1)}")
    return "\n".join(rows)


def _event_row(event: Event, t0: float, marked: bool) -> str:
    fields = fields_text(event)
    ms = (float(event["t"]) - t0) * 1000.0
    row = f"  {'>' if marked else ' '} {ms:+10.1f} ms  {event.get('src', '?'):<7} {event.get('ev')}"
    row = f"{row} {fields}" if fields else row
    return row if len(row) <= 160 else row[:157] + "..."
