"""Matching what a destination (the client or a per-proc file) received against what a
child emitted on one stream: linear when they agree or one is a prefix of the other (a
crash); only the differing middle is aligned, by difflib when small and by hashing
otherwise. Lines may be `Lines` blobs: the common head and tail are found on the blobs.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Sequence
from difflib import SequenceMatcher

from .lines import Lines, as_lines
from .report import StreamMatch

_DIFF_LIMIT = 2_000
"""Middles up to this many lines a side are aligned by difflib (best with repeated lines,
quadratic at worst); larger ones pair each line with its next unused emitted occurrence."""


def match_lines(emitted: Sequence[bytes], delivered: Sequence[bytes]) -> StreamMatch:
    """Align what a destination received with what was emitted, in O(n) when they agree."""
    emitted, delivered = _comparable(emitted, delivered)
    ne, nd = len(emitted), len(delivered)
    if isinstance(emitted, Lines) and isinstance(delivered, Lines):
        head = emitted.common_prefix(delivered)  # on the blobs: no line objects
        tail = emitted.common_suffix(delivered, min(ne, nd) - head)
    else:
        head = common_prefix(emitted, delivered)
        tail = common_suffix(emitted, delivered, min(ne, nd) - head)
    mid_e, mid_d = range(head, ne - tail), range(head, nd - tail)
    if not mid_e and not mid_d:
        return StreamMatch(ne, nd, head, tail, last_delivered=ne - 1)
    pairs = sorted(_pair(emitted, delivered, mid_e, mid_d).items())  # (@, #) by arrival
    keep = _longest_increasing([i for _, i in pairs])
    in_order = {i: p for k, (p, i) in enumerate(pairs) if k in keep}
    moved = {i: p for k, (p, i) in enumerate(pairs) if k not in keep}
    paired_e = {i for _, i in pairs}
    paired_d = {p for p, _ in pairs}
    spare = [p for p in mid_d if p not in paired_d]
    first_seen = _first_indices(emitted, {delivered[p] for p in spare})
    duplicates = {p: first_seen[delivered[p]] for p in spare if delivered[p] in first_seen}
    unexpected = [p for p in spare if delivered[p] not in first_seen]
    last = max(head - 1, max(paired_e, default=-1), ne - 1 if tail else -1)
    return StreamMatch(
        ne,
        nd,
        head,
        tail,
        in_order=in_order,
        moved=moved,
        duplicates=duplicates,
        unexpected=unexpected,
        lost=[i for i in mid_e if i not in paired_e],
        last_delivered=last,
    )


def _comparable(
    emitted: Sequence[bytes], delivered: Sequence[bytes]
) -> tuple[Sequence[bytes], Sequence[bytes]]:
    """Both as `Lines` when one is (and the other's lines hold no newline), else both as
    tuples: either way their slices compare equal when their lines do."""
    if isinstance(emitted, Lines) or isinstance(delivered, Lines):
        try:
            return as_lines(emitted), as_lines(delivered)
        except ValueError:  # a line with a newline in it: only a tuple can hold it
            pass
    return tuple(emitted), tuple(delivered)


def count_match(n_emitted: int, n_delivered: int) -> StreamMatch:
    """Aggregated mode: only counts are known, so a shortfall is presumed to be the last lines."""
    head = min(n_emitted, n_delivered)
    return StreamMatch(
        n_emitted,
        n_delivered,
        head,
        0,
        unexpected=range(n_emitted, n_delivered),
        lost=range(n_delivered, n_emitted),
        last_delivered=head - 1,
    )


def common_prefix(a: Sequence[bytes], b: Sequence[bytes]) -> int:
    """Length of the common prefix by halving slice comparisons: O(n) work, all in C."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while hi - lo > 1:  # a[:lo] == b[:lo] and a[lo:hi] != b[lo:hi]
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def common_suffix(a: Sequence[bytes], b: Sequence[bytes], limit: int) -> int:
    """Length of the common suffix, at most `limit`, the same way as `common_prefix`."""
    na, nb = len(a), len(b)
    if limit <= 0:
        return 0
    if a[na - limit :] == b[nb - limit :]:
        return limit
    lo, hi = 0, limit  # the last lo lines agree; the last hi do not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[na - mid : na - lo] == b[nb - mid : nb - lo]:
            lo = mid
        else:
            hi = mid
    return lo


def _pair(
    emitted: Sequence[bytes], delivered: Sequence[bytes], mid_e: range, mid_d: range
) -> dict[int, int]:
    """Pair each delivered middle line (@) with an emitted middle line (#) of equal content."""
    pairs: dict[int, int] = {}
    if not mid_e or not mid_d:
        return pairs
    if len(mid_e) <= _DIFF_LIMIT and len(mid_d) <= _DIFF_LIMIT:
        e = emitted[mid_e.start : mid_e.stop]
        d = delivered[mid_d.start : mid_d.stop]
        for a, b, size in SequenceMatcher(None, e, d, autojunk=False).get_matching_blocks():
            for k in range(size):
                pairs[mid_d.start + b + k] = mid_e.start + a + k
        taken = set(pairs.values())
        candidates: Sequence[int] = [i for i in mid_e if i not in taken]
    else:
        candidates = mid_e
    # Unpaired lines take the next unused emitted occurrence of their content. Repeats are
    # rare, so the first occurrence is kept as a plain int and only repeats get a queue.
    first: dict[bytes, int] = {}
    repeats: dict[bytes, deque[int]] = {}
    for i in candidates:
        line = emitted[i]
        if line in first:
            repeats.setdefault(line, deque()).append(i)
        else:
            first[line] = i
    for p in mid_d:
        if p in pairs:
            continue
        line = delivered[p]
        i = first.pop(line, -1)
        if i < 0 and (more := repeats.get(line)):
            i = more.popleft()
        if i >= 0:
            pairs[p] = i
    return pairs


def _longest_increasing(values: Sequence[int]) -> set[int]:
    """Positions in `values` of one longest strictly increasing subsequence (O(n log n))."""
    tails: list[int] = []  # smallest last value of an increasing run of each length
    ends: list[int] = []  # position holding that value
    back = [-1] * len(values)
    for k, v in enumerate(values):
        j = bisect_left(tails, v)
        if j:
            back[k] = ends[j - 1]
        if j == len(tails):
            tails.append(v)
            ends.append(k)
        else:
            tails[j], ends[j] = v, k
    keep: set[int] = set()
    k = ends[-1] if ends else -1
    while k >= 0:
        keep.add(k)
        k = back[k]
    return keep


def _first_indices(emitted: Sequence[bytes], wanted: set[bytes]) -> dict[bytes, int]:
    found: dict[bytes, int] = {}
    if wanted:
        for i, line in enumerate(emitted):
            if line in wanted and line not in found:
                found[line] = i
    return found
