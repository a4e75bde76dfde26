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

Event = Mapping[str, Any]

LOSS_CAUSES = ("send_skipped", "forwarder_lost", "child_killed", "child_exited", "eof")
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
