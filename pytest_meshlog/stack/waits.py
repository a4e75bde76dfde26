"""Bounded waits: every wait of the stack ends by its deadline.

Wait for an event where one exists (`process_exit` waits on a pidfd); `poll_until` is for
a state nothing announces (a thread state in /proc, a transport's write buffer), and
backs off from `first` to `most` between looks, so a long wait does not spin.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable


async def poll_until(
    check: Callable[[], bool], deadline: float, *, first: float = 0.001, most: float = 0.02
) -> bool:
    """True once `check()` holds; False if it still does not at `deadline` (monotonic)."""
    interval = first
    while not check():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(interval, left))
        interval = min(interval * 2, most)
    return True


async def process_exit(pid: int, deadline: float) -> bool:
    """True once process `pid` (a child of ours, not yet reaped) has ended; False at the
    deadline. Waits on a pidfd: no polling. A pid that is already gone counts as ended."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await asyncio.wait_for(ended, max(0.0, deadline - time.monotonic()))
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        with contextlib.suppress(OSError):
            os.close(fd)
