"""The `slow_client` fault: a client that consumes each batch slowly."""

from __future__ import annotations

import asyncio

from .channel import FrameConnection


def consume_slowly(conn: FrameConnection, delay: float) -> None:
    """Each batch costs `delay` of this forwarder's reading time (the loop itself stays
    free, so barriers and control go on): its reading pauses until the batch is paid."""
    loop = asyncio.get_running_loop()
    now = loop.time()
    resume_at = max(conn.info.get("resume_at", now), now) + delay
    conn.info["resume_at"] = resume_at
    conn.pause_reading()
    handle = conn.info.get("resume_handle")
    if handle is not None:
        handle.cancel()
    conn.info["resume_handle"] = loop.call_at(resume_at, conn.resume_reading)
