"""The driver side of a Monarch mesh, in a process of its own that the harness can kill.

`python -m pytest_meshlog.monarch.helper PLAN.json REPLY_FD` reads one JSON command per
line on stdin and answers each with one JSON line on REPLY_FD. Its own stdout and stderr
are what a Monarch user sees in their terminal: Monarch's client prints forwarded lines
there and the local host's console tee writes the children's raw bytes there, so nothing
else may ever be written to fds 1 and 2 of this process.

Every Monarch call is bounded (`Future.get(timeout=...)`); the harness also bounds each
command from outside, because a call can hang below Python.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from ..foreign.helper_link import open_reply, serve

FILE_PREFIX = "monarch_log_"


def open_log_files() -> list[str]:
    """Monarch's per-host files that this process holds open (its FileAppender writes
    them): the exact set of files this mesh made, whoever else writes to the same dir."""
    out = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        base = os.path.basename(target)
        if base.startswith(FILE_PREFIX) and base.endswith((".stdout", ".stderr")):
            out.append(target)
    return sorted(set(out))


class Driver:
    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.procs: Any = None
        self.actors: Any = None
        self.pids: dict[int, int] = {}

    def spawn(self, timeout: float) -> dict[str, Any]:
        from monarch.actor import this_host

        from .proc_actor import ScriptActor

        n = int(self.plan["procs"])
        self.procs = this_host().spawn_procs(per_host={"gpus": n}, name=self.plan["name"])
        window = self.plan["aggregate_window_sec"]
        asyncio.run(
            self.procs.logging_option(
                stream_to_client=bool(self.plan["stream_to_client"]), aggregate_window_sec=window
            )
        )
        self.actors = self.procs.spawn("script", ScriptActor)
        ready = self.actors.prepare.call(self.plan["scripts_dir"], self.plan["record_dir"])
        for _, (rank, pid) in ready.get(timeout=timeout).items():
            self.pids[int(rank)] = int(pid)
        self.actors.run.broadcast()
        return {"pids": self.pids, "files": open_log_files()}

    def flush(self, version: int, timeout: float) -> dict[str, Any]:
        start = time.monotonic()
        try:
            # the barrier `ProcMesh.stop()` runs first; 0.7.0 has no public flush call
            self.procs._logging_manager._new_flush_handle().get(timeout=timeout)
            status, error = "completed", None
        except Exception as exc:  # a timeout, or the flush failed
            status, error = "timeout", f"{type(exc).__name__}: {exc}"
        latency = time.monotonic() - start
        if status == "completed":
            self.actors.ack.broadcast(version)  # children waiting in a barrier step go on
        return {"status": status, "latency_s": latency, "error": error}

    def stop(self, timeout: float) -> dict[str, Any]:
        start = time.monotonic()
        self.procs.stop().get(timeout=timeout)
        return {"duration_s": time.monotonic() - start, "files": open_log_files()}

    def kill(self, rank: int, sig: int) -> dict[str, Any]:
        os.kill(self.pids[rank], sig)
        return {}


def keep_going_on_faults(record: str) -> None:
    """Record each supervision failure that reaches the client instead of exiting.

    Monarch's default `unhandled_fault_hook` exits the driver when any proc dies, so a
    crash scenario ends the client before its stop; a fault-tolerant Monarch program
    replaces the hook like this (documented in `monarch.actor.unhandled_fault_hook`).
    Off by default (the catalog sees what a default Monarch program does); on with
    MESHLOG_MONARCH_FAULT_HOOK=record."""
    import monarch.actor

    def hook(failure: Any) -> None:
        with open(record, "a", encoding="utf-8") as f:
            f.write(f"{time.time():.3f} {failure}\n")

    monarch.actor.unhandled_fault_hook = hook


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as f:
        plan = json.load(f)
    if plan["keep_going"]:
        keep_going_on_faults(plan["faults_record"])
    reply = open_reply(argv[1])  # Monarch's procs must not hold the reply pipe
    driver = Driver(plan)
    try:
        serve(driver, sys.stdin, reply)
    except KeyboardInterrupt:  # how Monarch's default unhandled_fault_hook ends a driver
        error = "Monarch's unhandled_fault_hook ended the driver (a proc of the mesh failed)"
        reply.write(json.dumps({"ok": False, "fatal": True, "error": error}) + "\n")
        return 1
    finally:
        reply.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
