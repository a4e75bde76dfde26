"""The runtime interface a script executes against (kept out of the child's import path).

`pytest_meshlog.stack.child.ChildRuntime` satisfies it; so does the stand-in in
standalone.py and any test double with the same attributes.
"""

from __future__ import annotations

import threading
from typing import Protocol


class Runtime(Protocol):
    """What `execute` needs from `pytest_meshlog.stack.child.ChildRuntime`."""

    rank: int
    record_dir: str | None
    output_lock: threading.Lock
    stopping: threading.Event

    def wait_barrier(self, timeout: float) -> int | None: ...
