"""The client's aggregation window (SPEC 1.7): lines gather per target while a window is
set and are printed as one block when it ends, at a barrier, on a switch back to
unaggregated mode and at stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from . import wire
from .aggregate import Aggregator
from .journal import Ev, Journal


class AggregateWindow:
    """Runs on the driver's stack loop; `sink` gets each printed block."""

    def __init__(self, sink: Callable[[int, bytes], None], journal: Journal) -> None:
        self.sink = sink
        self.journal = journal
        self.window: float | None = None
        self.aggregators = (Aggregator(), Aggregator())
        self._timer: asyncio.TimerHandle | None = None

    def set(self, window: float | None) -> None:
        """SetAggregate: switching to None prints what is pending first."""
        if window is None and self.window is not None:
            self.print_pending()
        self.window = window

    def add(self, target: int, blob: bytes) -> None:
        """One batch's lines (joined by newlines); the first one opens the window."""
        lines = blob.split(b"\n")
        self.aggregators[target].add_many(ln.decode("utf-8", "replace") for ln in lines)
        if self._timer is None and self.window is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.window, self.print_pending)

    def print_pending(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for target, agg in enumerate(self.aggregators):
            if agg:
                n = agg.line_count
                self.sink(target, agg.take().encode())
                self.journal(Ev.AGGREGATE_PRINTED, target=wire.TARGETS[target], lines=n)
