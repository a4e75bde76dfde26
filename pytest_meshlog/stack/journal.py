"""The per-mesh teardown journal: one JSON-lines file per process.

Each event is one unbuffered `os.write` to an O_APPEND file, so an event written right
before a SIGKILL is on disk. Events are per teardown step or per batch, never per line,
which keeps the journal off the hot path; orjson encodes them (a host stopping 64
children spent a tenth of its time in `json.dumps`). `time.monotonic()` is system-wide on Linux,
so events of different processes sort onto one timeline.
"""

from __future__ import annotations

import json
import os
import time
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

Event = dict[str, Any]


class Ev(StrEnum):
    """Every journal event name, defined once: the stack journals them by name and the
    harness reads them by name (`event["ev"] == Ev.EOF` holds: a member is its string).
    Their fields are listed in docs/architecture.md ("The journal")."""

    # Any process that serves or dials a socket (driver, rank)
    CONNECTION_REFUSED = "connection_refused"
    FRAME_REJECTED = "frame_rejected"
    MESSAGE_FAILED = "message_failed"
    # The driver: barriers, forwarders, stop
    BARRIER_STARTED = "barrier_started"
    BARRIER_ACKED = "barrier_acked"
    BARRIER_RANK_LOST = "barrier_rank_lost"
    BARRIER_UNEXPECTED_ACK = "barrier_unexpected_ack"
    BARRIER_STALE = "barrier_stale"
    BARRIER_NO_OPEN = "barrier_no_open"
    BARRIER_COMPLETED = "barrier_completed"
    BARRIER_SUPERSEDED = "barrier_superseded"
    BARRIER_TIMEOUT = "barrier_timeout"
    FORWARDER_CONNECTED = "forwarder_connected"
    FORWARDER_BYE = "forwarder_bye"
    FORWARDER_LOST = "forwarder_lost"
    STOP_BEGIN = "stop_begin"
    STOP_END = "stop_end"
    STALE_DIR_REMOVED = "stale_dir_removed"
    FALLBACK_DELIVERED = "fallback_delivered"
    SEQ_GAP = "seq_gap"
    AGGREGATE_PRINTED = "aggregate_printed"
    PROCESS_STALLED = "process_stalled"  # the driver was not run for a while (`stalls`)
    SINK_FAILED = "sink_failed"
    SINK_FAILED_TOTAL = "sink_failed_total"
    SINK_SLOW = "sink_slow"
    # A bootstrap host: children, tees, senders, files
    HOST_STARTED = "host_started"
    HOST_STOPPING = "host_stopping"
    CHILD_SPAWNED = "child_spawned"
    SENDER_CONNECTED = "sender_connected"
    SENDER_CLOSED = "sender_closed"
    EOF = "eof"
    PARTIAL_FORWARDED = "partial_forwarded"
    FLUSH_NONE_POSTED = "flush_none_posted"
    SEND_SKIPPED = "send_skipped"
    ABORT = "abort"
    FILE_APPENDER_CREATED = "file_appender_created"
    FILE_APPENDER_GATED = "file_appender_gated"
    FILE_APPENDER_CLOSED = "file_appender_closed"
    FILE_WRITER_TIMED_OUT = "file_writer_timed_out"
    PIPE_HELD = "pipe_held"
    DESCENDANT_ENDED = "descendant_ended"
    PIPE_WATCH_FAILED = "pipe_watch_failed"
    CHILD_EXITED = "child_exited"
    CHILD_KILLED = "child_killed"
    CONSOLE_BYTES = "console_bytes"
    SEND_SKIPPED_TOTAL = "send_skipped_total"
    SENDER_FAILED = "sender_failed"
    FILE_WRITE_ERROR = "file_write_error"
    FILE_POST_AFTER_CLOSE = "file_post_after_close"
    CHANNEL_CLOSED = "channel_closed"
    FILE_APPENDER_REDIRECTED = "file_appender_redirected"
    FILE_APPENDER_SLOWED = "file_appender_slowed"
    STOP_SIGNAL_SLOW = "stop_signal_slow"
    HOST_EXIT = "host_exit"
    # A child (rank): its forwarder and its quiesce
    FORWARDER_STARTED = "forwarder_started"
    SENDERS_MISSING = "senders_missing"
    FORWARDER_FAILED = "forwarder_failed"
    FORWARDER_ERROR = "forwarder_error"
    FORWARDER_LOG = "forwarder_log"
    STOP_REQUESTED = "stop_requested"
    QUIESCED = "quiesced"
    TAILS_RELAYED = "tails_relayed"
    TAILS_MISSING = "tails_missing"
    QUIESCE_INCOMPLETE = "quiesce_incomplete"
    CHILD_EXIT = "child_exit"


class Journal:
    """Append-only event writer for one process (`src` is "driver", "host0", "rank3"...)."""

    def __init__(self, directory: str | os.PathLike[str] | None, src: str) -> None:
        self.src = src
        self._fd: int | None = None
        if directory is not None:
            path = os.path.join(directory, f"{src}.jsonl")
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def __call__(self, ev: Ev, **fields: Any) -> None:
        if self._fd is None:
            return
        record = {"t": time.monotonic(), "src": self.src, "ev": ev.value, **fields}
        try:
            line = orjson.dumps(record, default=_jsonable, option=_OPTIONS)
        except orjson.JSONEncodeError:  # what orjson will not take (an int past 64 bits)
            line = (json.dumps(record, default=_jsonable) + "\n").encode()
        os.write(self._fd, line)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


def read_journal(directory: str | os.PathLike[str], src: str | None = None) -> list[Event]:
    """All events of all processes (or of the one `src`), in time order; a torn last line
    (killed writer) is skipped."""
    events: list[Event] = []
    root = Path(directory)
    if not root.is_dir():
        return events
    for path in sorted(root.glob(f"{src or '*'}.jsonl")):
        for raw in path.read_bytes().splitlines():
            try:
                events.append(orjson.loads(raw))
            except ValueError:  # orjson.JSONDecodeError is one
                continue
    events.sort(key=lambda e: e["t"])
    return events
