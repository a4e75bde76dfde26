"""The tee's line framing alone: CPU nanoseconds per line, ASCII against mixed UTF-8.

    python benchmarks/bench_framing.py

64 KiB chunks of 40-byte lines (Faker sentences, as the flooder writes them) through one
LineFramer with a rank prefix; process CPU time, so a busy machine slows it less than it
slows wall time. Prints the median of 31 passes.
"""

from __future__ import annotations

import statistics
import time

from fake_procs import content
from pytest_meshlog.stack.framing import LineFramer


def chunks(flavour: content.Flavour) -> list[bytes]:
    lines = [content.sentence(1, i, flavour).encode()[:40] for i in range(5000)]
    blob = b"\n".join(lines * 4) + b"\n"
    return [blob[i : i + 65536] for i in range(0, len(blob), 65536)]


def ns_per_line(data: list[bytes], passes: int = 31) -> float:
    n = sum(c.count(b"\n") for c in data)
    samples = []
    for _ in range(passes):
        framer = LineFramer(b"[0] ")
        t0 = time.process_time()
        for chunk in data:
            framer.feed(chunk)
        samples.append(time.process_time() - t0)
    return statistics.median(samples) / n * 1e9


if __name__ == "__main__":
    for flavour in ("ascii", "mixed"):
        print(f"{flavour:6} {ns_per_line(chunks(flavour)):6.0f} ns per line")
