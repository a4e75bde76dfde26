"""A terminal stand-in: a separate process that reads a pipe to its end and counts lines.

The client under test writes what it would print into the pipe, so it pays for real
writes and for backpressure from a reader on the same cores, as a client printing to a
terminal or to a log collector does (and as Monarch's client does in bench_monarch.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import TracebackType

READER = "import os\nn=0\nwhile b:=os.read(0,1<<18): n+=b.count(10)\nprint(n)"


class PipeSink:
    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", READER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self._proc.stdin is not None
        self._fd = self._proc.stdin.fileno()
        self.pid = self._proc.pid

    def stack_sink(self, target: int, data: bytes) -> None:
        """The stack client's Sink signature: (stdout or stderr, bytes)."""
        self.raw_sink(data)

    def raw_sink(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def close(self) -> int:
        """Close the pipe; the number of lines the reader counted."""
        out, _ = self._proc.communicate(timeout=60)
        return int(out)

    def __enter__(self) -> PipeSink:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.close()
        finally:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait(10)
