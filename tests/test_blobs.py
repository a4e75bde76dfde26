"""Lines as one blob: cutting into batches and the peek ring agree with a list of lines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_meshlog.stack.blobs import Cutter, Lines, RecentLines
from pytest_meshlog.stack.framing import LineFramer

# lines of very different lengths, so a batch's size is a poor guess of the next one's
line = st.one_of(st.binary(max_size=3), st.binary(min_size=40, max_size=300)).map(
    lambda b: b.replace(b"\n", b".")
)


def as_lines(lines: list[bytes]) -> Lines:
    return Lines(b"\n".join(lines), len(lines))


@given(
    st.lists(st.lists(line, min_size=1, max_size=400), min_size=1, max_size=4), st.integers(1, 120)
)
def test_cut_is_the_lines_in_groups_of_at_most(blobs: list[list[bytes]], most: int) -> None:
    cutter = Cutter(most)  # one per stream: its guess carries over from blob to blob
    for lines in blobs:
        got = cutter.cut(b"\n".join(lines))
        want = [lines[i : i + most] for i in range(0, len(lines), most)]
        assert [b.split() for b in got] == want
        assert [b.nlines for b in got] == [len(w) for w in want]


def test_cut_of_uniform_lines_into_batches_of_a_hundred() -> None:
    lines = [b"%040d" % i for i in range(1601)]
    got = Cutter(100).cut(b"\n".join(lines))
    assert [b.nlines for b in got] == [100] * 16 + [1]
    assert b"\n".join(b.blob for b in got) == b"\n".join(lines)


def test_a_blob_ending_in_an_empty_line_keeps_it() -> None:
    assert Cutter(2).cut(b"a\nb\n") == [Lines(b"a\nb", 2), Lines(b"", 1)]


@given(st.lists(st.lists(line, min_size=1, max_size=30), max_size=20), st.integers(0, 50))
def test_recent_lines_are_the_last_lines_added(batches: list[list[bytes]], size: int) -> None:
    ring = RecentLines(size)
    for batch in batches:
        ring.add(as_lines(batch))
    every = [ln for batch in batches for ln in batch]
    assert ring.peek() == (every[-size:] if size else [])


def test_feed_blob_joins_the_lines_it_completed() -> None:
    framer = LineFramer(b"[3] ")
    assert framer.feed_blob(b"held") is None
    got = framer.feed_blob(b" part\r\nsecond\n\nfour\nrest")
    assert got == b"[3] held part\n[3] second\n[3] \n[3] four"
    assert framer.feed_blob(b"\n") == b"[3] rest"


def test_a_prefix_with_a_newline_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"b'\[0\]\\n'"):
        LineFramer(b"[0]\n")
