"""The LogClientActor's aggregation of similar lines (SPEC 1.7): pure logic, no I/O, no timers.

A line joins the group whose *first* line is closest to it by normalised Levenshtein
distance, if that distance is below the threshold (ties go to the earliest group);
otherwise it starts a new group. The actor owns the window and calls `take()` at the
deadline, on a switch to unaggregated mode, at a barrier and at stop.

Aggregation is on during floods, and the work is inherently lines x groups distance
computations, so every comparison runs in rapidfuzz's C++ code, never in a Python loop:

* An exact repeat of a group's first line (the common flood case) is a dict hit:
  distance 0 is the minimum and first lines are unique, so that group is the answer.
* `add()` scans all group heads with `process.extractOne` and a score cutoff, which
  skips heads ruled out by length and stops at a perfect match. It replaces its best
  only on a strict improvement, which is exactly "earliest group wins" on ties.
* `add_many()` (a whole `Log` payload) computes one `process.cdist` matrix of the
  payload's new lines against the existing heads. cdist compares many short queries
  per SIMD step, measured ~4x faster per comparison than one extractOne per line on
  3000 similar 45-char heads. Heads created inside the payload are then checked with
  extractOne, which keeps the result identical to adding the lines one by one.
  cdist needs numpy; without it `add_many()` falls back to `add()`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy is optional; only the batch path uses it
    np = None  # type: ignore[assignment]

BLOCK_START = ">>> Aggregated Logs (start) >>>"
BLOCK_END = "<<< Aggregated Logs (end) <<<"
DEFAULT_THRESHOLD = 0.15

_BATCH_MIN_LINES = 8
"""Below this many unresolved lines a cdist call costs more than it saves."""
_BATCH_MIN_HEADS = 16
"""With few groups extractOne per line is already cheap."""
_SLICE_LINES = 256
"""A huge payload is done in slices so heads made early in it join the next matrix."""
_MATRIX_CELLS = 1 << 22
"""Cap on one cdist matrix (float64: 32 MiB)."""

_SCORER: Any = Levenshtein.normalized_distance


class Aggregator:
    """Groups similar lines for one output target until `take()` is called."""

    __slots__ = ("_counts", "_heads", "_index", "_line_count", "_threshold")

    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold={threshold!r} must be within [0, 1]")
        self._threshold = threshold
        self._heads: list[str] = []  # first line of each group, in creation order
        self._counts: list[int] = []
        self._index: dict[str, int] = {}  # head -> group number (heads are unique if t > 0)
        self._line_count = 0

    def add(self, line: str) -> None:
        """Put one line in its group (or a new one)."""
        exact = self._index.get(line) if self._threshold > 0.0 else None
        self._place(line, exact if exact is not None else self._closest(line, 0))

    def add_many(self, lines: Iterable[str]) -> None:
        """Add lines in order; same result as `add()` on each, faster for big payloads."""
        batch = lines if isinstance(lines, list) else list(lines)
        if np is None or self._threshold == 0.0:
            for line in batch:
                self.add(line)
            return
        start = 0
        while start < len(batch):
            fits = _MATRIX_CELLS // max(len(self._heads), 1)
            rows = max(_BATCH_MIN_LINES, min(_SLICE_LINES, fits))
            self._add_slice(batch[start : start + rows])
            start += rows

    @property
    def groups(self) -> list[tuple[int, str]]:
        """(count, first line) for each group, in creation order."""
        return list(zip(self._counts, self._heads, strict=True))

    @property
    def line_count(self) -> int:
        """Lines added since the last reset."""
        return self._line_count

    def __bool__(self) -> bool:
        return self._line_count > 0

    def render(self) -> str:
        """The block the client prints: "" when nothing is pending."""
        if not self._heads:
            return ""
        rows = "".join(
            f"[{count} similar log lines] {head}\n"
            for count, head in zip(self._counts, self._heads, strict=True)
        )
        return f"{BLOCK_START}\n{rows}{BLOCK_END}\n"

    def take(self) -> str:
        """Render, then start over (the window deadline)."""
        block = self.render()
        self._heads = []
        self._counts = []
        self._index = {}
        self._line_count = 0
        return block

    def _place(self, line: str, group: int | None) -> None:
        self._line_count += 1
        if group is None:
            self._index.setdefault(line, len(self._heads))
            self._heads.append(line)
            self._counts.append(1)
        else:
            self._counts[group] += 1

    def _closest(self, line: str, first: int, cutoff: float | None = None) -> int | None:
        """Earliest head from `first` on with distance below `cutoff` (default: threshold)."""
        limit = self._threshold if cutoff is None else cutoff
        if limit <= 0.0 or first >= len(self._heads):
            return None
        heads = self._heads if first == 0 else self._heads[first:]
        match = process.extractOne(line, heads, scorer=_SCORER, processor=None, score_cutoff=limit)
        # The cutoff is inclusive; the rule is "strictly below".
        if match is None or match[1] >= limit:
            return None
        return first + int(match[2])

    def _add_slice(self, lines: list[str]) -> None:
        """Batch path of `add_many` (threshold > 0, numpy available)."""
        index = self._index
        known = len(self._heads)
        pending = list(dict.fromkeys(line for line in lines if line not in index))
        if len(pending) < _BATCH_MIN_LINES or known < _BATCH_MIN_HEADS:
            for line in lines:
                self.add(line)
            return
        matrix = process.cdist(
            pending,
            self._heads,
            scorer=_SCORER,
            processor=None,
            score_cutoff=self._threshold,
            dtype=np.float64,
            workers=1,
        )
        best = matrix.argmin(axis=1)  # first minimum: the earliest group on ties
        best_dist = matrix[np.arange(len(pending)), best]
        row = {line: i for i, line in enumerate(pending)}
        for line in lines:
            group = index.get(line)
            if group is None:
                r = row[line]
                dist = float(best_dist[r])
                old = int(best[r]) if dist < self._threshold else None
                # A head created earlier in this slice wins only if strictly closer.
                new = self._closest(line, known, dist if old is not None else None)
                group = new if new is not None else old
            self._place(line, group)
