"""Reading the tags (`<r3o17> `) that start every generated line back out of output.

A delivered line may carry the `[rank] ` prefix, an aggregation row's `[N similar log
lines] ` or be truncated; the tag is searched for, not assumed at offset 0.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .steps import Stream

_TAG = re.compile(rb"<r(\d+)([oe])(\d+)> ")
_STREAM: dict[bytes, Stream] = {b"o": "stdout", b"e": "stderr"}


class Tag(NamedTuple):
    rank: int
    stream: Stream
    seq: int


def find_tag(line: bytes | str) -> Tag | None:
    """The first tag in `line`, or None (untagged text, e.g. an explicit `.line("...")`)."""
    data = line.encode("utf-8", errors="replace") if isinstance(line, str) else line
    m = _TAG.search(data)
    if m is None:
        return None
    return Tag(int(m.group(1)), _STREAM[m.group(2)], int(m.group(3)))


def find_tags(data: bytes | str) -> list[Tag]:
    """Every tag in `data`, in order (e.g. a partial line joined with the next line)."""
    raw = data.encode("utf-8", errors="replace") if isinstance(data, str) else data
    return [Tag(int(a), _STREAM[b], int(c)) for a, b, c in _TAG.findall(raw)]
