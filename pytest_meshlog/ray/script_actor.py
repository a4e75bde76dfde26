"""The actor each rank of a Ray mesh runs: one fake_procs script in the actor's worker.

Imported only by the helper (the driver program) and Ray's worker processes, never by the
plugin. The script runs in a thread of the worker process itself, writing to the worker's
fds 1 and 2, which Ray pointed at the worker's log files (`worker-*.out/.err`): the worker
is the child whose output Ray captures. Crash and exit steps end the worker, as they end a
reference child; a script that ends on its own leaves the worker alive, as a Ray actor
stays alive after its method returns, until the driver's `ray.shutdown()`.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from fake_procs.executor import execute
from fake_procs.standalone import StandaloneRuntime


class ScriptActor:
    """Made a Ray actor class by the helper (`ray.remote(...)(ScriptActor)`, so this
    module needs no Ray to import). `prepare()` loads the rank's script and answers the worker's pid (the label Ray
    prints with every forwarded line); `run()` starts the script and returns at once."""

    def __init__(self, rank: int, scripts_dir: str, record_dir: str) -> None:
        self.rank = rank
        self.script = json.loads(Path(scripts_dir, f"rank{rank}.json").read_text("utf-8"))
        # the stand-in runtime, with no signals installed: Ray gives no barrier acks
        self.rt = StandaloneRuntime(rank, record_dir)

    def prepare(self) -> int:
        return os.getpid()

    def run(self) -> None:
        args = (self.script, self.rt)
        threading.Thread(target=execute, args=args, name="script", daemon=True).start()
