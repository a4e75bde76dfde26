"""The fast flood renderer writes exactly what rendering line by line would."""

from __future__ import annotations

from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from fake_procs.render import FLOOD_BLOCK, Renderer


def _line_by_line(r: Renderer, stream: str, size: int | None, n: int) -> Iterator[bytes]:
    """The reference: one `generated` line at a time, greedy blocks of FLOOD_BLOCK bytes."""
    block: list[bytes] = []
    pending = 0
    for _ in range(n):
        line = r.generated(stream, size)
        if block and pending + len(line) > FLOOD_BLOCK:
            yield b"".join(block)
            block, pending = [], 0
        block.append(line)
        pending += len(line)
    if block:
        yield b"".join(block)


@settings(max_examples=150, deadline=None)
@given(
    corpus=st.lists(st.text(min_size=1, max_size=300), min_size=1, max_size=12),
    rank=st.integers(0, 200),
    size=st.none() | st.integers(0, 9000),
    n=st.integers(0, 1500),
    before=st.integers(0, 1100),
)
def test_flood_blocks_match_line_by_line_rendering(
    corpus: list[str], rank: int, size: int | None, n: int, before: int
) -> None:
    fast, slow = Renderer(rank, corpus), Renderer(rank, corpus)
    for r in (fast, slow):  # tags cross a digit boundary somewhere in many examples
        r.seq["stdout"] = before
    got = [data for _, data in fast.payloads({"op": "flood", "stream": "stdout",
                                              "line_bytes": size, "n": n})]  # fmt: skip
    assert got == list(_line_by_line(slow, "stdout", size, n))
    assert fast.seq == slow.seq
