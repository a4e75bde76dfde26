"""The child runtime: what turns any Python program into a mesh child.

The forwarder runs on an asyncio loop in a daemon thread; the workload runs in the main
thread. The child never exits with its forwarder still holding data: on a natural end or
on STOP it *quiesces* first (SPEC 1.11): it stops writing, flushes Python's buffers, points
fds 1 and 2 at /dev/null so the bootstrap's tee sees EOF, waits until the tee's final
partial lines and Flush(None)s have been relayed, tells the client goodbye, then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from .forwarder import LogForwardActor
from .journal import Ev, Journal
from .mesh_key import take_key
from .patches import apply_patches

START_TIMEOUT_S = 15.0
QUIESCE_TIMEOUT_S = float(os.environ.get("MESHLOG_QUIESCE_TIMEOUT", "15"))
"""How long a stopping child waits for its tails to be relayed before exiting anyway."""


class ChildRuntime:
    """Handles a workload uses: identity, the output lock, the stop flag, barrier waits."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if environ is None else environ
        self.rank = int(env.get("MESHLOG_RANK", "0"))
        self.hostname = env.get("MESHLOG_HOSTNAME", "localhost")
        self.proc_id = env.get("MESHLOG_PROC_ID", f"proc[{self.rank}]")
        self.record_dir: str | None = env.get("MESHLOG_RECORD_DIR") or None
        self.output_lock = threading.Lock()
        self.stopping = threading.Event()
        self._channel = env.get("BOOTSTRAP_LOG_CHANNEL") or None
        self._client_addr = env.get("MESHLOG_CLIENT_ADDR") or None
        self._stream_to_client = env.get("MESHLOG_STREAM_TO_CLIENT", "1") != "0"
        self._journal = Journal(env.get("MESHLOG_JOURNAL_DIR") or None, f"rank{self.rank}")
        self._key = take_key(env)  # the mesh secret, from the descriptor the bootstrap left
        self._acked = 0
        self._acked_cond = threading.Condition()
        self._quiesce_once = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fwd: LogForwardActor | None = None

    # -- for workloads ----------------------------------------------------------------------

    def wait_barrier(self, timeout: float) -> int | None:
        """Block until the forwarder acks a barrier after this call began; None on timeout."""
        deadline = time.monotonic() + timeout
        with self._acked_cond:
            start = self._acked
            while self._acked <= start:
                left = deadline - time.monotonic()
                if left <= 0 or self.stopping.is_set():
                    return None
                self._acked_cond.wait(min(left, 0.1))
            return self._acked

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the forwarder and wait until the bootstrap's two senders are connected."""
        ready = threading.Event()
        failure: list[BaseException] = []

        async def start_forwarder() -> None:
            try:
                await self._start_forwarder(ready)
            except BaseException as exc:  # reported to the main thread below
                failure.append(exc)
                ready.set()

        def run() -> None:
            # One run_forever from the start: `ready` is set while the loop runs. (Starting
            # with run_until_complete left a gap before run_forever in which a quick
            # workload could quiesce, see no running loop, and exit without relaying.)
            loop = asyncio.new_event_loop()
            loop.set_exception_handler(self._loop_error)
            self._loop = loop
            starting = loop.create_task(start_forwarder())
            loop.run_forever()
            del starting

        _journal_asyncio_logs(self._journal)
        threading.Thread(target=run, name="meshlog-forwarder", daemon=True).start()
        if not ready.wait(START_TIMEOUT_S + 1):
            failure.append(TimeoutError("forwarder did not start"))
        if failure:  # the journal, never the child's stderr: that stream is being judged
            self._journal(Ev.FORWARDER_FAILED, error=repr(failure[0]))

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """What asyncio would print to stderr (the child's stderr: judged) is journaled."""
        exc = context.get("exception")
        self._journal(
            Ev.FORWARDER_ERROR,
            message=str(context.get("message", "")),
            error=None if exc is None else repr(exc),
        )

    async def _start_forwarder(self, ready: threading.Event) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        self._fwd = LogForwardActor(
            rank=self.rank,
            hostname=self.hostname,
            proc_id=self.proc_id,
            channel=self._channel,
            client_addr=self._client_addr,
            journal=self._journal,
            on_stop=self._stop_requested,
            on_ack=self._on_ack,
            stream_to_client=self._stream_to_client,
            key=self._key,
        )
        await self._fwd.start(deadline)
        if self._channel is not None:
            try:
                await asyncio.wait_for(self._fwd.senders_ready.wait(), deadline - time.monotonic())
            except TimeoutError:
                self._journal(Ev.SENDERS_MISSING, connected=sorted(self._fwd.senders))
        ready.set()

    def _on_ack(self, version: int) -> None:
        with self._acked_cond:
            self._acked = max(self._acked, version)
            self._acked_cond.notify_all()

    def _stop_requested(self) -> None:
        self.stopping.set()
        threading.Thread(target=self.finish, args=(0,), name="meshlog-quiesce", daemon=True).start()

    def finish(self, code: int) -> NoReturn:
        """Quiesce (once, whoever calls first) and exit with `code`."""
        if not self._quiesce_once.acquire(blocking=False):
            while True:  # the other caller is quiescing and will exit the process
                time.sleep(3600)
        self.stopping.set()
        self.output_lock.acquire()  # held until exit: no write can start after this
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
        self._journal(Ev.QUIESCED)
        loop, fwd = self._loop, self._fwd
        if loop is not None and fwd is not None and loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._drain_tails(fwd), loop)
            try:
                fut.result(QUIESCE_TIMEOUT_S + 1)
            except BaseException as exc:
                self._journal(Ev.QUIESCE_INCOMPLETE, error=repr(exc))
        self._journal(Ev.CHILD_EXIT, code=code)
        save_coverage()
        os._exit(code)

    async def _drain_tails(self, fwd: LogForwardActor) -> None:
        deadline = time.monotonic() + QUIESCE_TIMEOUT_S
        if fwd.senders:
            try:
                await asyncio.wait_for(fwd.tails_done.wait(), deadline - time.monotonic())
                self._journal(Ev.TAILS_RELAYED, streams=sorted(fwd.eof_streams))
            except TimeoutError:
                self._journal(Ev.TAILS_MISSING, streams=sorted(fwd.eof_streams))
        await fwd.say_bye(deadline)
        fwd.close()


class _JournalHandler(logging.Handler):
    def __init__(self, journal: Journal) -> None:
        super().__init__(logging.DEBUG)
        self.journal = journal

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.journal(Ev.FORWARDER_LOG, level=record.levelname, message=record.getMessage())


def _journal_asyncio_logs(journal: Journal) -> None:
    """asyncio's own log (e.g. a connection it dropped) goes to the journal; by default it
    reaches the child's stderr through logging's last-resort handler."""
    logger = logging.getLogger("asyncio")
    logger.addHandler(_JournalHandler(journal))
    logger.propagate = False


def save_coverage() -> None:
    """os._exit skips atexit, where coverage saves its data: save it here (only a child
    that crashes loses its own coverage)."""
    cov_module = sys.modules.get("coverage")
    if cov_module is None:
        return
    cov = cov_module.Coverage.current()
    if cov is not None:
        cov.stop()
        cov.save()


def run_child(workload: Callable[[ChildRuntime], int | None]) -> NoReturn:
    """Run `workload` as a mesh child; quiesce and exit with its return code (0 for None)."""
    apply_patches("child")  # MESHLOG_STACK_PATCH, from a test tool outside the stack
    rt = ChildRuntime()
    rt.start()
    try:
        code = workload(rt) or 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    rt.finish(code)
