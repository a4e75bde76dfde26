"""A stack of its own: each rank a plain child on pipes, read by the driver's threads."""

import os
import signal
import subprocess
import sys
import threading
import time

from pytest_meshlog.backend import ExitInfo, MeshError, StopOutcome

LOSSY = os.environ.get("PIPE_STACK_LOSSY") == "1"  # a broken variant: forgets last lines


class NoFiles:
    def file_log_gate(self):
        return "the pipe stack writes no per-proc files"


class PipeClient:
    has_journal = has_barrier = False  # no journal; no flush (stop waits for EOF)
    config = NoFiles()

    def __init__(self, plan):
        self.workdir, self.record_dir = plan.workdir, str(plan.workdir / "records")
        os.makedirs(self.record_dir, exist_ok=True)
        self.delivered, self.exits, self.procs, self.readers = {}, {}, [], []
        for rank, script in enumerate(plan.scripts):
            script.write(path := plan.workdir / f"rank{rank}.json")
            proc = subprocess.Popen(
                [sys.executable, "-m", "fake_procs", "--standalone", "--rank", str(rank),
                 "--record-dir", self.record_dir, str(path)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            )  # fmt: skip
            self.procs.append(proc)
            pre = b"[%d] " % rank if plan.options.prefix_with_rank else b""
            for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
                lines = self.delivered[rank, name] = []
                self.readers.append(threading.Thread(target=self._read, args=(pipe, pre, lines)))
                self.readers[-1].start()

    def _read(self, pipe, pre, lines):
        for line in pipe:  # the rank is the pipe's; the last line may lack its "\n"
            line = line[:-1] if line.endswith(b"\n") else line
            lines.append(pre + (line[:-1] if line.endswith(b"\r") else line))
        if LOSSY and lines:
            lines.pop()

    def wait_children(self, timeout):
        deadline = time.monotonic() + timeout
        for rank, proc in enumerate(self.procs):
            try:
                code = proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise MeshError(f"rank {rank} still running after {timeout:.1f}s") from None
            self.exits[rank] = ExitInfo(code, None) if code >= 0 else ExitInfo(None, -code)
        return dict(self.exits)

    def stop(self, timeout=15.0):
        start = time.monotonic()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()  # the stand-in runtime's stop
        self.wait_children(timeout)
        for reader in self.readers:
            reader.join(max(0.0, timeout - (time.monotonic() - start)))
        return StopOutcome(barrier=None, exits=dict(self.exits), tails={}, files=[],
                           unconfirmed_ranks=(), problems=[], unconfirmed_clean_exits=(),
                           duration_s=time.monotonic() - start)  # fmt: skip

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()

    def kill(self, rank, sig=signal.SIGKILL, reason=""):
        self.procs[rank].send_signal(sig)

    def read_journal(self):
        return []

    def flush(self, timeout=10.0):
        raise MeshError("the pipe stack has no barrier")  # never called: "barrier" is lacking

    def inject(self, rank, what, *args):
        raise MeshError(f"the pipe stack cannot inject {what!r}")


class PipeBackend:
    name = "pipes"
    lacks = {"barrier": "no flush", "journal": "no journal", "aggregate": "no aggregation",
             "set_mode": "no modes", "hosts>1": "one machine", "env:test": "no environments"}  # fmt: skip

    def unsupported(self, feature):
        if feature.startswith("fault:") and feature != "fault:crash":
            return "the pipe stack has no fault hooks"
        return self.lacks.get(feature)

    def launch(self, plan):
        return PipeClient(plan)


def pytest_meshlog_make_stack(config, name):
    return PipeBackend() if name == "pipes" else None
