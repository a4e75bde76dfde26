"""The LogClientActor's aggregation of similar lines (SPEC 1.7): pure logic, no I/O, no timers.

A line joins the group whose *first* line is closest to it by normalised Levenshtein
distance, if that distance is below the threshold (ties go to the earliest group);
otherwise it starts a new group. The actor owns the window and calls `take()` at the
deadline, on a switch to unaggregated mode, at a barrier and at stop.

Speed matters because aggregation is on during floods, where a line arrives for every
few microseconds of budget. So:

* an exact repeat of a group's first line (the common case in a flood) is a dict hit;
  distance 0 is the minimum and first lines are unique, so that group is the answer;
* otherwise `rapidfuzz.process.extractOne` scans all group heads in C with a score
  cutoff, which lets it skip heads whose length alone rules them out and stop early
  on a perfect match. It keeps the first of equally good matches (it only replaces its
  best on a strict improvement), which is exactly the "earliest group wins" rule, so
  no Python loop over groups is needed however many there are.
"""

from __future__ import annotations

from collections.abc import Iterable

from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

BLOCK_START = ">>> Aggregated Logs (start) >>>"
BLOCK_END = "<<< Aggregated Logs (end) <<<"
DEFAULT_THRESHOLD = 0.15


class Aggregator:
    """Groups similar lines for one output target until `take()` is called."""

    __slots__ = ("_counts", "_heads", "_index", "_line_count", "_threshold")

    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold={threshold!r} must be within [0, 1]")
        self._threshold = threshold
        self._heads: list[str] = []  # first line of each group, in creation order
        self._counts: list[int] = []
        self._index: dict[str, int] = {}  # head -> group number, for the exact-repeat fast path
        self._line_count = 0

    def add(self, line: str) -> None:
        """Put one line in its group (or a new one)."""
        self._line_count += 1
        group = self._find(line)
        if group is None:
            self._index.setdefault(line, len(self._heads))
            self._heads.append(line)
            self._counts.append(1)
        else:
            self._counts[group] += 1

    def add_many(self, lines: Iterable[str]) -> None:
        """Add lines in order (a whole `Log` payload at once)."""
        for line in lines:
            self.add(line)

    @property
    def groups(self) -> list[tuple[int, str]]:
        """(count, first line) for each group, in creation order."""
        return list(zip(self._counts, self._heads))

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
            for count, head in zip(self._counts, self._heads)
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

    def _find(self, line: str) -> int | None:
        """The group this line joins, or None for a new group."""
        if not self._heads:
            return None
        # With threshold 0 nothing joins anything, not even an identical line.
        if self._threshold > 0.0:
            exact = self._index.get(line)
            if exact is not None:
                return exact
        match = process.extractOne(
            line,
            self._heads,
            scorer=Levenshtein.normalized_distance,
            processor=None,
            score_cutoff=self._threshold,
        )
        # The cutoff is inclusive; the rule is "below the threshold".
        if match is None or match[1] >= self._threshold:
            return None
        index: int = match[2]
        return index
