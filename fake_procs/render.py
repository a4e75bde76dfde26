"""Turning script steps (their JSON form) into the exact bytes a child writes.

Shared by the child (to write) and the driver (to know what was written), so the two can
never disagree. Stdlib only and cheap to import: the child loads it on every start.

Tags: every *generated* line starts with `<r{rank}{o|e}{seq}> `, e.g. `<r3o17> `, where
`o`/`e` is stdout/stderr and `seq` counts tagged writes per stream from 0. Only the rank
is unknown when the script is built, so the child renders the tag; the driver renders the
same tag for the same rank when it replays the script. The tag sits at the start of the
line, so it survives the `[rank] ` prefix, truncation at 4096 bytes and aggregation.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

STREAMS = ("stdout", "stderr")
FDS = {"stdout": 1, "stderr": 2}
LETTERS = {"stdout": "o", "stderr": "e"}
WRITE_OPS = frozenset({"line", "partial", "raw", "flood", "interleave"})
FLOOD_BLOCK = 4096
"""A flood writes whole lines in blocks of at most PIPE_BUF bytes (one atomic write and
one record entry each): a chatty child, not one paying a system call per line."""

_FALLBACK_CORPUS = ("fake procs write lines",)


def tag_bytes(rank: int, stream: str, seq: int) -> bytes:
    """The tag that starts a generated line: `<r3o17> `."""
    return f"<r{rank}{LETTERS[stream]}{seq}> ".encode()


class Renderer:
    """Renders write steps for one rank; holds the per-stream tag counters.

    Feed it every write step of a script, in order (counters carry across steps).
    """

    __slots__ = ("_corpus", "_fill", "rank", "seq")

    def __init__(self, rank: int, corpus: Sequence[str]) -> None:
        self.rank = rank
        self.seq = {"stdout": 0, "stderr": 0}
        self._corpus = [s.encode() for s in (corpus or _FALLBACK_CORPUS)]
        self._fill: dict[tuple[int, int], bytes] = {}

    def next_tag(self, stream: str) -> bytes:
        seq = self.seq[stream]
        self.seq[stream] = seq + 1
        return tag_bytes(self.rank, stream, seq)

    def filler(self, seq: int, nbytes: int) -> bytes:
        """Exactly `nbytes` of corpus text: cut at a character boundary, padded with dots."""
        if nbytes <= 0:
            return b""
        pick = seq % len(self._corpus)
        key = (pick, nbytes)
        body = self._fill.get(key)
        if body is None:
            src = self._corpus[pick] + b" "
            text = src * (nbytes // len(src) + 1)
            cut = nbytes
            while cut > 0 and (text[cut] & 0xC0) == 0x80:  # continuation byte: mid-character
                cut -= 1
            body = text[:cut] + b"." * (nbytes - cut)
            if len(self._fill) < 4096:
                self._fill[key] = body
        return body

    def generated(self, stream: str, line_bytes: int | None) -> bytes:
        """One generated, tagged line with its newline; `line_bytes` excludes the newline.

        A line never drops its tag: if the tag alone is longer than `line_bytes`, the line
        is just the tag.
        """
        seq = self.seq[stream]
        tag = self.next_tag(stream)
        if line_bytes is None:
            return tag + self._corpus[seq % len(self._corpus)] + b"\n"
        return tag + self.filler(seq, line_bytes - len(tag)) + b"\n"

    def payloads(self, step: Mapping[str, Any]) -> Iterator[tuple[str, bytes]]:
        """(stream, bytes) for each write the step makes, in order; nothing for other ops."""
        op = step["op"]
        if op == "line" or op == "partial":
            stream = step["stream"]
            body = step["text"].encode()
            if op == "line":
                body += b"\n"
            yield stream, (self.next_tag(stream) + body if step["tag"] else body)
        elif op == "raw":
            stream = step["stream"]
            body = binascii.a2b_base64(step["b64"])
            yield stream, (self.next_tag(stream) + body if step["tag"] else body)
        elif op == "flood":  # written in blocks of whole lines, as a buffered writer would
            yield from self._flood(step["stream"], step["line_bytes"], step["n"])
        elif op == "interleave":
            size = step["line_bytes"]
            for i in range(step["n"]):
                stream = STREAMS[i % 2]
                yield stream, self.generated(stream, size)

    def _flood(self, stream: str, size: int | None, n: int) -> Iterator[tuple[str, bytes]]:
        """`n` generated lines packed greedily into blocks of at most FLOOD_BLOCK bytes
        (a line longer than that is a block of its own).

        The same bytes as `generated` line by line, but each block is one `%` format of
        per-line templates: a flood is the hot path of every throughput benchmark, and
        rendering must not be what limits it.
        """
        seq = self.seq[stream]
        end = seq + n
        self.seq[stream] = end
        head = f"<r{self.rank}{LETTERS[stream]}".encode()
        picks = len(self._corpus)
        pending: list[bytes] = []
        used = 0
        while seq < end:
            digits = len(str(seq))
            run_end = min(end, 10**digits)  # the tag's length is fixed up to here
            tag_len = len(head) + digits + 2
            bodies = [self._body(pick, size, tag_len) for pick in range(picks)]
            templates = [head + b"%d> " + b.replace(b"%", b"%%") + b"\n" for b in bodies]
            lens = [tag_len + len(b) + 1 for b in bodies]
            uniform = len(set(lens)) == 1  # the usual case: filler pads to the size
            while seq < run_end:
                k = 0
                room = FLOOD_BLOCK - used
                while seq + k < run_end and lens[(seq + k) % picks] <= room:
                    room -= lens[(seq + k) % picks]
                    k += 1
                    if uniform:  # every line the same length: take all that fit at once
                        more = min(room // lens[0], run_end - seq - k)
                        k += more
                        room -= more * lens[0]
                if k == 0:
                    if pending:  # the next line does not fit: the block is done
                        yield stream, b"".join(pending)
                        pending, used = [], 0
                        continue
                    k = 1  # a line longer than a block: alone
                    room = FLOOD_BLOCK - lens[seq % picks]
                pending.append(_in_turn(templates, seq, k) % tuple(range(seq, seq + k)))
                used = FLOOD_BLOCK - room
                seq += k
        if pending:
            yield stream, b"".join(pending)

    def _body(self, pick: int, size: int | None, tag_len: int) -> bytes:
        """What follows a tag of `tag_len` bytes in a generated line using corpus `pick`."""
        if size is None:
            return self._corpus[pick]
        return self.filler(pick, size - tag_len)


def _in_turn(templates: list[bytes], seq: int, k: int) -> bytes:
    """The templates of lines seq .. seq+k-1 joined (line i uses template i % len)."""
    picks = len(templates)
    turn = seq % picks
    if turn + k <= picks:
        return b"".join(templates[turn : turn + k])
    cycle = templates[turn:] + templates[:turn]
    full, rest = divmod(k, picks)
    return b"".join(cycle) * full + b"".join(cycle[:rest])


def walk_writes(
    steps: Sequence[Mapping[str, Any]], rank: int, corpus: Sequence[str]
) -> Iterator[tuple[int, str, str, bytes]]:
    """(step index, stream, mode, bytes) for every write of a complete run, in order."""
    renderer = Renderer(rank, corpus)
    for index, step in enumerate(steps):
        if step["op"] in WRITE_OPS:
            mode = step["mode"]
            for stream, data in renderer.payloads(step):
                yield index, stream, mode, data
