"""The framing oracle (SPEC 1.3) and the replay of progress records, without processes."""

from __future__ import annotations

import random

import pytest

from fake_procs import (
    MAX_LINE_BYTES,
    ProgressError,
    emitted,
    expected_lines,
    final_partial,
    frame_line,
    planned_bytes,
    read_progress,
    script,
    split_raw,
)
from pytest_meshlog.stack import framing
from pytest_meshlog.stack.config import MAX_LINE_SIZE

SUFFIX = b"... [TRUNCATED]"
REPLACEMENT = "\ufffd".encode()


def test_limit_matches_the_stack_constant() -> None:
    assert MAX_LINE_BYTES == MAX_LINE_SIZE == 4096


def test_lines_and_prefix() -> None:
    raw = b"alpha\nbeta\n\ngamma\n"
    assert expected_lines(raw, rank=3) == [b"[3] alpha", b"[3] beta", b"[3] ", b"[3] gamma"]
    assert expected_lines(raw, rank=3, prefix_with_rank=False) == [b"alpha", b"beta", b"", b"gamma"]


def test_crlf_is_normalised_but_other_carriage_returns_stay() -> None:
    raw = b"a\r\nb\r\r\n\r\nc\rd\n"
    assert expected_lines(raw, rank=0, prefix_with_rank=False) == [b"a", b"b\r", b"", b"c\rd"]


def test_final_partial_line_is_framed_by_the_same_rules() -> None:
    raw = b"one\ntwo \xff"
    assert split_raw(raw) == ([b"one"], b"two \xff")
    assert final_partial(raw, rank=12) == b"[12] two " + REPLACEMENT
    assert expected_lines(raw, rank=12) == [b"[12] one", b"[12] two " + REPLACEMENT]
    assert expected_lines(raw, rank=12, include_partial=False) == [b"[12] one"]
    # No partial line when the bytes end in a newline or there are none.
    assert final_partial(b"done\n", rank=0) is None
    assert final_partial(b"", rank=0) is None
    assert expected_lines(b"", rank=0) == []
    # A trailing CR without LF did not end a CRLF: it is kept.
    assert final_partial(b"x\r", rank=0, prefix_with_rank=False) == b"x\r"
    # A long partial line is truncated like any other.
    tail = final_partial(b"z" * 5000, rank=1)
    assert tail == b"[1] " + b"z" * 4096 + SUFFIX


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"\xff\xfeok", "\ufffd\ufffdok"),
        (b"cut \xe3\x81", "cut \ufffd"),  # an incomplete 3-byte sequence: one replacement
        (b"\xc0\xaf", "\ufffd\ufffd"),  # overlong encoding
        (b"\xed\xa0\x80", "\ufffd\ufffd\ufffd"),  # an encoded surrogate
        (b"nul\x00byte", "nul\x00byte"),
        ("déjà 日本 😀".encode(), "déjà 日本 😀"),
    ],
)
def test_decoding_replaces_invalid_utf8(raw: bytes, text: str) -> None:
    assert frame_line(raw, rank=0, prefix_with_rank=False) == text.encode()


@pytest.mark.parametrize("char", ["é", "日", "😀"], ids=["2-byte", "3-byte", "4-byte"])
@pytest.mark.parametrize("shift", [0, 1, 2, 3])
def test_truncation_cuts_at_the_last_boundary_at_or_below_4096(char: str, shift: int) -> None:
    width = len(char.encode())
    ascii_len = 4096 - shift
    line = (b"a" * ascii_len) + char.encode() * 3
    got = frame_line(line, rank=0, prefix_with_rank=False)
    assert got.endswith(SUFFIX)
    kept = got[: -len(SUFFIX)]
    # The first wide char fits when it ends at or before byte 4096.
    fits = (4096 - ascii_len) // width
    assert kept == b"a" * ascii_len + char.encode() * fits
    assert len(kept) <= 4096 < len(kept) + width
    kept.decode("utf-8")  # still valid UTF-8


def test_truncation_limits_exactly() -> None:
    exact = b"b" * 4096
    assert frame_line(exact, rank=5) == b"[5] " + exact
    assert frame_line(exact + b"c", rank=5) == b"[5] " + exact + SUFFIX
    # The prefix is added after truncation and does not count toward the limit.
    assert frame_line(b"d" * 5000, rank=123) == b"[123] " + b"d" * 4096 + SUFFIX
    # The limit applies to the decoded text: each invalid byte becomes 3 bytes.
    line = b"e" * 4094 + b"\xff"  # 4095 raw bytes, 4097 decoded
    assert frame_line(line, rank=0, prefix_with_rank=False) == b"e" * 4094 + SUFFIX
    assert frame_line(b"\r" * 4097 + b"\n", rank=0, prefix_with_rank=False).endswith(SUFFIX)


def test_oracle_agrees_with_stack_framing_on_random_bytes() -> None:
    """A differential check: same inputs through our rules and the stack's incremental
    framer, fed in random chunk sizes. Either disagreeing means one of them is wrong."""
    rng = random.Random(1234)
    alphabet = [b"a", b"\n", b"\r", b"\r\n", b"\xff", b"\xe3\x81", "é".encode(), "日".encode(),
                "😀".encode(), b"x" * 700]  # fmt: skip
    for _ in range(200):
        raw = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        if rng.random() < 0.3:
            raw += "😀".encode() * rng.randint(1020, 1030)  # lines around 4096 bytes
        framer = framing.LineFramer(b"[7] ")
        got: list[bytes] = []
        pos = 0
        while pos < len(raw):
            step = rng.randint(1, 9000)
            got += framer.feed(raw[pos : pos + step])
            pos += step
        tail = framer.take_partial()
        if tail is not None:
            got.append(tail)
        assert got == expected_lines(raw, rank=7), raw[:80]


# -- replaying progress records (hand-written records; real ones in the executor tests) --


def test_replay_orders_direct_and_buffered_writes_by_the_record() -> None:
    s = script(seed=1).line("a").line("b", mode="buffered").line("c").flush()
    record = b"fake_procs/1 rank=2 pid=1 steps=4\nw o d 0 2\nw o d 2 2\nw o b 3 2\nend 0\n"
    e = emitted(s, 2, record)
    assert e.streams == {"stdout": b"a\nc\nb\n", "stderr": b""}
    assert planned_bytes(s, 2)["stdout"] == b"a\nb\nc\n"  # script order, not fd order
    assert e.uncertain is None and e.progress.ending == "end"


def test_replay_of_a_killed_child_marks_the_last_write_uncertain() -> None:
    s = script(seed=1).flood(400, 20)  # 21-byte lines, written in blocks of 195 lines
    record = b"fake_procs/1 rank=0 pid=1 steps=1\n" + b"w o d 0 4095\n" * 2 + b"w o d 0"
    e = emitted(s, 0, record)  # the torn last line is ignored
    full = planned_bytes(s, 0)["stdout"]
    assert e.streams["stdout"] == full[: 2 * 4095]
    assert e.uncertain is not None and e.uncertain.nbytes == 4095
    assert e.at_least("stdout") == full[:4095]
    assert e.progress.ending is None


def test_replay_splits_buffer_chunks_anywhere_and_applies_corrections() -> None:
    s = script(seed=1).flood(10, 20, mode="buffered").line("z")
    full = planned_bytes(s, 0)["stdout"]
    record = b"fake_procs/1 rank=0 pid=1 steps=2\nw o b 0 50\nw o d 1 2\nw o b 0 100\nc o b 0 7\n"
    e = emitted(s, 0, record)
    assert e.streams["stdout"] == full[:50] + b"z\n" + full[50:57]
    assert read_progress(record).writes[-1].nbytes == 7


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (b"fake_procs/1 rank=1 pid=1 steps=1\n", "rank 1's"),
        (b"w o d 0 2\nw o d 0 2\n", "more bytes for stdout"),
        (b"w o d 0 5\n", "does not match"),
        (b"w x d 0 5\n", "malformed"),
    ],
)
def test_replay_rejects_records_that_do_not_fit(record: bytes, message: str) -> None:
    s = script(seed=1).line("a")
    with pytest.raises(ProgressError, match=message):
        emitted(s, 0, record)
