"""The tee's line framing (SPEC 1.3), unit cases plus a property check against a naive model.

The model decodes each whole line at once and finds the cut by letting the decoder drop a
split character, so it shares nothing with the framer's bounded buffer or its
continuation-byte scan.
"""

from __future__ import annotations

import itertools
import random
import re

import pytest

from pytest_meshlog.stack.config import MAX_LINE_SIZE
from pytest_meshlog.stack.framing import TRUNCATED_SUFFIX, LineFramer, finish_line

SUFFIX = TRUNCATED_SUFFIX.encode()
BOUND = MAX_LINE_SIZE + 4  # the most a framer may hold for one partial line


def model_line(raw: bytes, prefix: bytes = b"") -> bytes:
    """One line by the spec: decode with replacement, cut at a character boundary."""
    text = raw.decode("utf-8", errors="replace")
    if len(text.encode("utf-8")) <= MAX_LINE_SIZE:
        return prefix + text.encode("utf-8")
    # The re-encoded text is valid UTF-8, so the only thing "ignore" can drop from its first
    # MAX_LINE_SIZE bytes is a character the cut went through.
    kept = text.encode("utf-8")[:MAX_LINE_SIZE].decode("utf-8", errors="ignore")
    return prefix + kept.encode("utf-8") + SUFFIX


def model_stream(data: bytes, prefix: bytes = b"") -> tuple[list[bytes], bytes | None]:
    """All complete lines of a stream, and its final partial line (None if there is none)."""
    *complete, tail = data.split(b"\n")
    lines = [model_line(raw[:-1] if raw.endswith(b"\r") else raw, prefix) for raw in complete]
    return lines, (model_line(tail, prefix) if tail else None)


def run(chunks: list[bytes], prefix: bytes = b"") -> tuple[list[bytes], bytes | None, int]:
    """Feed chunks; returns the lines, the partial line and the most bytes ever pending."""
    framer = LineFramer(prefix)
    lines: list[bytes] = []
    most = 0
    for chunk in chunks:
        lines += framer.feed(chunk)
        most = max(most, framer.pending)
    partial = framer.take_partial()
    assert framer.pending == 0 and framer.take_partial() is None
    return lines, partial, most


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# -- framing across chunks ------------------------------------------------------------------


def test_line_split_over_many_chunks() -> None:
    data = b"the quick brown fox\n"
    lines, partial, _ = run([bytes([b]) for b in data])
    assert lines == [b"the quick brown fox"] and partial is None


def test_several_lines_in_one_chunk() -> None:
    framer = LineFramer()
    assert framer.feed(b"one\ntwo\nthr") == [b"one", b"two"]
    assert framer.feed(b"ee\n") == [b"three"]


def test_crlf_split_between_chunks() -> None:
    framer = LineFramer()
    assert framer.feed(b"windows line\r") == []
    assert framer.feed(b"\nnext") == [b"windows line"]
    assert framer.take_partial() == b"next"


def test_empty_lines() -> None:
    assert run([b"\n\n", b"\r\n", b"a\n\n"])[0] == [b"", b"", b"", b"a", b""]


def test_chunk_of_only_newline() -> None:
    framer = LineFramer()
    assert framer.feed(b"\n") == [b""]
    assert framer.feed(b"pending") == []
    assert framer.feed(b"\n") == [b"pending"]
    assert framer.pending == 0


def test_empty_chunk_is_harmless() -> None:
    framer = LineFramer()
    assert framer.feed(b"") == []
    assert framer.feed(b"x") == []
    assert framer.feed(b"") == []
    assert framer.take_partial() == b"x"


def test_crlf_normalised_lone_cr_kept() -> None:
    framer = LineFramer()
    assert framer.feed(b"a\rb\r\n") == [b"a\rb"]
    assert framer.feed(b"progress 10%\rprogress 20%\n") == [b"progress 10%\rprogress 20%"]
    assert framer.feed(b"two\r\r\n") == [b"two\r"]  # only the ending's \r goes
    assert framer.feed(b"\r") == []
    assert framer.take_partial() == b"\r"  # no newline: nothing to normalise


def test_invalid_utf8_becomes_replacement_character() -> None:
    framer = LineFramer()
    got = framer.feed(b"ok \xff\xfe end\ncut \xe2\x82\nsurrogate \xed\xa0\x80\n")
    assert [line.decode() for line in got] == [
        "ok \ufffd\ufffd end",
        "cut \ufffd",
        "surrogate \ufffd\ufffd\ufffd",
    ]


def test_invalid_utf8_split_across_chunks_is_decoded_per_line() -> None:
    """A character split over chunks is whole once the line is framed."""
    euro = "€".encode()
    assert run([b"price " + euro[:1], euro[1:2], euro[2:] + b"\n"])[0] == ["price €".encode()]


# -- truncation -----------------------------------------------------------------------------


def test_exactly_max_line_size_is_kept() -> None:
    line = b"a" * MAX_LINE_SIZE
    assert LineFramer().feed(line + b"\n") == [line]
    assert LineFramer().feed(line + b"\r\n") == [line]


def test_one_byte_over_is_truncated() -> None:
    line = b"a" * (MAX_LINE_SIZE + 1)
    assert LineFramer().feed(line + b"\n") == [b"a" * MAX_LINE_SIZE + SUFFIX]


@pytest.mark.parametrize("char", ["é", "€", "😀"], ids=["2-byte", "3-byte", "4-byte"])
@pytest.mark.parametrize("offset", range(-4, 2))
def test_multibyte_character_straddling_the_boundary(char: str, offset: int) -> None:
    """A character starting at MAX_LINE_SIZE + offset, with ASCII after it."""
    width = len(char.encode())
    start = MAX_LINE_SIZE + offset
    raw = b"a" * start + char.encode() + b"b" * 10
    got = LineFramer().feed(raw + b"\n")[0]
    if start + width <= MAX_LINE_SIZE:  # the character fits: cut after it
        expected = b"a" * start + char.encode() + b"b" * (MAX_LINE_SIZE - start - width)
    else:  # it would straddle: cut before it
        expected = b"a" * min(start, MAX_LINE_SIZE)
    assert got == expected + SUFFIX
    assert len(got) - len(SUFFIX) <= MAX_LINE_SIZE
    got.decode("utf-8")  # never a broken character


@pytest.mark.parametrize("char", ["é", "€", "😀"], ids=["2-byte", "3-byte", "4-byte"])
def test_line_of_only_multibyte_characters(char: str) -> None:
    width = len(char.encode())
    raw = (char * (MAX_LINE_SIZE // width + 5)).encode()
    got = LineFramer().feed(raw + b"\n")[0]
    assert got == (char * (MAX_LINE_SIZE // width)).encode() + SUFFIX


def test_replacement_characters_count_after_decoding() -> None:
    """4095 raw bytes that decode to 4097 (0xFF becomes a 3-byte U+FFFD) are truncated."""
    raw = b"a" * (MAX_LINE_SIZE - 2) + b"\xff"
    assert LineFramer().feed(raw + b"\n") == [b"a" * (MAX_LINE_SIZE - 2) + SUFFIX]


@pytest.mark.parametrize(
    "line",
    [
        b"z" * (1 << 20),
        "€".encode() * ((1 << 20) // 3),
        b"a" * 4093 + "😀".encode() * 300_000,
        b"a" * 4095 + b"\xf0\x9f\x98" + b"x" * (1 << 20),
        random.Random(7).randbytes(1 << 20).replace(b"\n", b"."),
    ],
    ids=["ascii", "euro", "emoji-at-4093", "broken-4-byte-at-4095", "random-bytes"],
)
def test_megabyte_line_stays_bounded(line: bytes) -> None:
    """A child that never writes a newline cannot make the tee hold more than one line's cap."""
    chunks = split_at(line, list(range(8192, len(line), 8192)))  # the tee's 8 KiB reads
    lines, partial, most = run(chunks)
    assert lines == [] and most <= BOUND
    assert partial == model_line(line)

    lines, partial, most = run([*chunks, b"\r\n"])
    assert lines == [model_line(line)] and partial is None and most <= BOUND


def test_megabyte_line_in_one_chunk() -> None:
    line = "ü".encode() * (1 << 19)
    framer = LineFramer()
    assert framer.feed(line) == []
    assert framer.pending <= BOUND
    assert framer.feed(b"\n") == [model_line(line)]


# -- partial line and prefix ----------------------------------------------------------------


def test_take_partial() -> None:
    framer = LineFramer()
    assert framer.take_partial() is None
    framer.feed(b"done\nhalf a li")
    assert framer.pending == len(b"half a li")
    assert framer.take_partial() == b"half a li"
    assert framer.take_partial() is None
    framer.feed(b"ne\n")
    assert framer.take_partial() is None  # the taken part is not glued to later bytes


def test_take_partial_truncates_and_decodes() -> None:
    framer = LineFramer(b"[1] ")
    framer.feed(b"\xff" + b"q" * 5000)
    assert framer.take_partial() == b"[1] " + "\ufffd".encode() + b"q" * 4093 + SUFFIX


def test_prefix_on_every_line() -> None:
    framer = LineFramer(b"[3] ")
    assert framer.feed(b"a\n\nb\r\n") == [b"[3] a", b"[3] ", b"[3] b"]
    framer.feed(b"tail")
    assert framer.take_partial() == b"[3] tail"


def test_prefix_is_not_counted_towards_truncation() -> None:
    line = b"a" * MAX_LINE_SIZE
    assert LineFramer(b"[12] ").feed(line + b"\n") == [b"[12] " + line]
    assert LineFramer(b"[12] ").feed(line + b"a\n") == [b"[12] " + line + SUFFIX]


def test_no_prefix() -> None:
    assert LineFramer().feed(b"plain\n") == [b"plain"]
    assert LineFramer(b"").feed(b"plain\n") == [b"plain"]


def test_finish_line_matches_model_on_edge_cases() -> None:
    for raw in (b"", b"\r", b"\xc0\xaf", b"a" * 4096 + b"\xe2\x82", b"\xf0" * 5000):
        assert finish_line(raw, b"[0] ") == model_line(raw, b"[0] ")


# -- property check against the model -------------------------------------------------------

_TEXT: list[bytes] = [c.encode() for c in "aZ09 é€😀ß中\U0010ffff"]  # 1- to 4-byte characters
_BAD: list[bytes] = [
    b"\xff",  # never valid
    b"\x80",  # stray continuation
    b"\xc3",  # truncated 2-byte
    b"\xe2\x82",  # truncated 3-byte
    b"\xf0\x9f\x98",  # truncated 4-byte
    b"\xed\xa0\x80",  # encoded surrogate
    b"\xc0\xaf",  # overlong
    b"\xf4\x90\x80\x80",  # above U+10FFFF
]
_IN_LINE = [*_TEXT, *_BAD, b"\r"]


def _line_near_boundary(rng: random.Random) -> bytes:
    """A line whose length lands near MAX_LINE_SIZE, with odd bytes close to the cut."""
    target = MAX_LINE_SIZE + rng.randint(-12, 12)
    filler = rng.choice([b"a", "é".encode(), "€".encode(), "😀".encode()])
    body = filler * (max(target - 16, 0) // len(filler))
    while len(body) < target:
        body += rng.choice(_TEXT + _BAD if rng.random() < 0.3 else _TEXT)
    return body


def _line_random(rng: random.Random) -> bytes:
    length = rng.choice([0, 1, 3, 20, 300, rng.randint(0, 6000)])
    return b"".join(rng.choices(_IN_LINE, k=length))


def _stream(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randint(0, 4)):
        line = _line_near_boundary(rng) if rng.random() < 0.6 else _line_random(rng)
        parts.append(line + rng.choice([b"\n", b"\r\n", b"\r\r\n"]))
    if rng.random() < 0.6:  # a final partial line
        parts.append(_line_near_boundary(rng) if rng.random() < 0.5 else _line_random(rng))
    return b"".join(parts)


def _stream_of_short_lines(rng: random.Random) -> bytes:
    """Many short lines of every kind of byte: whole chunks take the fast path."""
    lines = [
        b"".join(rng.choices(_IN_LINE, k=rng.choice([0, 1, 5, 40])))
        + rng.choice([b"\n", b"\r\n", b"\r\r\n"])
        for _ in range(rng.randint(1, 60))
    ]
    return b"".join(lines) + b"".join(rng.choices(_IN_LINE, k=rng.choice([0, 3])))


def _chunking(rng: random.Random, data: bytes) -> list[bytes]:
    style = rng.randrange(4)
    if style == 0 or len(data) < 2:
        return [data]
    if style == 1:  # the tee's fixed-size reads
        size = rng.choice([1, 2, 3, 7, 64, 4096, 4097, 8192])
        return [data[i : i + size] for i in range(0, len(data), size)]
    if style == 2:  # cuts around the truncation point and around every newline
        newlines = [m.start() for m in re.finditer(b"\n", data)]
        cuts = [p + d for p in newlines for d in (-1, 0, 1) if 0 < p + d < len(data)]
        cuts += [MAX_LINE_SIZE + d for d in range(-4, 5) if 0 < MAX_LINE_SIZE + d < len(data)]
        return split_at(data, cuts)
    return split_at(data, [rng.randrange(1, len(data)) for _ in range(rng.randint(1, 40))])


def test_property_matches_model() -> None:
    rng = random.Random(20240517)
    for case in range(3000):
        data = _stream(rng) if case % 3 else _stream_of_short_lines(rng)
        chunks = _chunking(rng, data)
        prefix = rng.choice([b"", b"[7] "])
        expected_lines, expected_partial = model_stream(data, prefix)
        lines, partial, most = run(chunks, prefix)
        context = f"case {case}: {len(data)} bytes in {len(chunks)} chunks"
        assert lines == expected_lines, context
        assert partial == expected_partial, context
        assert most <= BOUND, context
