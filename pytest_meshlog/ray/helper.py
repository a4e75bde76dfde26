"""The driver program of a Ray mesh, in a process of its own that the harness can kill.

`python -m pytest_meshlog.ray.helper PLAN.json REPLY_FD` reads one JSON command per line
on stdin and answers each with one JSON line on REPLY_FD. Its stdout and stderr are the
driver's console, what a Ray user sees: with `log_to_driver=True` Ray prints every line
its workers wrote as `(<actor> pid=<pid>) <line>`, stdout lines on stdout and stderr lines
on stderr; nothing else may ever be written to fds 1 and 2 of this process.

The commands are what a Ray program does: `spawn` (`ray.init()`, one actor per rank,
their pids, then start the scripts), `stop` (`ray.shutdown()`), `exit`. A Ray call that
hangs is bounded from outside: the harness kills this process and everything below it.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from ..foreign.helper_link import open_reply, serve


class Driver:
    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.actors: list[Any] = []

    def init(self) -> dict[str, Any]:
        import ray

        start = time.monotonic()
        ray.init(
            num_cpus=1,  # the actors take none; one CPU keeps Ray from prestarting workers
            include_dashboard=False,
            log_to_driver=bool(self.plan["log_to_driver"]),
            _temp_dir=self.plan["temp_dir"],
            namespace=self.plan["name"],
        )
        context = ray.get_runtime_context()
        return {"init_s": time.monotonic() - start, "job_id": context.get_job_id()}

    def spawn(self, timeout: float) -> dict[str, Any]:
        import ray

        from .script_actor import ScriptActor

        actor_class = ray.remote(num_cpus=0, max_restarts=0)(ScriptActor)
        start = time.monotonic()
        self.actors = [
            actor_class.options(name=f"rank{rank}").remote(
                rank, self.plan["scripts_dir"], self.plan["record_dir"]
            )
            for rank in range(int(self.plan["procs"]))
        ]
        pids = ray.get([a.prepare.remote() for a in self.actors], timeout=timeout)
        for actor in self.actors:  # not awaited: a script may end its worker at once
            actor.run.remote()
        return {"pids": {str(r): int(p) for r, p in enumerate(pids)},
                "spawn_s": time.monotonic() - start}  # fmt: skip

    def stop(self) -> dict[str, Any]:
        import ray

        start = time.monotonic()
        ray.shutdown()
        return {"shutdown_s": time.monotonic() - start}


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as f:
        plan = json.load(f)
    reply = open_reply(argv[1])  # Ray's processes must not hold the reply pipe
    # a terminal is line-buffered: forwarded lines reach the console as Ray prints them
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    driver = Driver(plan)
    try:
        serve(driver, sys.stdin, reply)
    finally:
        reply.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
