"""A bootstrap host kept warm in reserve, so the next mesh does not wait for one to start.

A host is a fresh interpreter: ~120 ms of start-up and imports before it can fork a
child, paid by every mesh (a catalog run has seventy). A mesh that opts in
(`LoggingMeshClient(spare_host=True)`, as the pytest plugin does) starts one spare when
it closes, already importing what its children needed. The next mesh's spawn() takes it
and hands over its identity, environment and console files in one message; the spare
then runs exactly as a host started for that mesh would.

A spare is used only by the same interpreter, and only if the variables read at
interpreter start-up (PYTHON*, COVERAGE*, LD_*) are the ones the mesh would start a host
with; otherwise it is dropped and a host is started the usual way. It dies with its
driver (parent-death signal, and `discard()` at exit); the leak checks know it by
`reserved()`, as it belongs to no test.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import socket
import struct
import subprocess
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .procs import set_parent_death_signal

HOST_MODULE = "pytest_meshlog.stack.host"
READY = b"R"
"""The one byte a spare writes on its control socket once it has warmed up."""
READY_TIMEOUT_S = 15.0
_STARTUP_PREFIXES = ("PYTHON", "COVERAGE", "LD_")
_LEN = struct.Struct(">I")


def startup_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables an interpreter reads when it starts, which a spare cannot change later."""
    return {k: v for k, v in env.items() if k.startswith(_STARTUP_PREFIXES)}


@dataclass
class Spare:
    proc: subprocess.Popen[bytes]
    sock: socket.socket  # the driver's end of the host's control socketpair
    python: str
    startup: dict[str, str]

    ready: bool = False

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> bool:
        """Wait (bounded) until the spare has warmed up; False if it did not in time."""
        if not self.ready:
            self.sock.settimeout(timeout)
            try:
                self.ready = self.sock.recv(1) == READY
            except OSError:  # timeout, or the spare is gone
                return False
        return self.ready

    def hand_over(self, setup: Mapping[str, object], console: tuple[int, int]) -> None:
        """Give the spare its mesh: `setup` (host index, journal dir, environment) and the
        two console files, which become its stdout and stderr."""
        assert self.ready, "take() hands out only a spare that said it is ready"
        payload = json.dumps(setup).encode()
        self.sock.setblocking(True)
        socket.send_fds(self.sock, [_LEN.pack(len(payload))], list(console))
        self.sock.sendall(payload)


_lock = threading.Lock()
_spare: Spare | None = None


def start(python: str, env: Mapping[str, str], warm: Iterable[str] = ()) -> None:
    """Start the next spare (dropping any other), importing the modules in `warm`."""
    global _spare
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    argv = [python, "-m", HOST_MODULE, "--spare", "--ctl-fd", str(child.fileno())]
    for module in sorted(set(warm)):
        argv += ["--warm", module]
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dict(env),
            pass_fds=(child.fileno(),),
            preexec_fn=set_parent_death_signal,
        )
    except OSError:
        parent.close()
        return  # no spare: the next mesh starts its host itself
    finally:
        child.close()
    with _lock:
        old, _spare = _spare, Spare(proc, parent, python, startup_env(env))
    if old is not None:
        _drop(old)


def take(python: str, env: Mapping[str, str]) -> Spare | None:
    """The spare, once warm, if it suits a host with this interpreter and environment
    (else None, and a host is started the usual way)."""
    global _spare
    with _lock:
        spare, _spare = _spare, None
    if spare is None:
        return None
    suits = spare.python == python and spare.startup == startup_env(env)
    # wait_ready reads the ready byte: from then on the control socket carries only frames
    if not suits or spare.proc.poll() is not None or not spare.wait_ready():
        _drop(spare)
        return None
    return spare


def wait_ready(timeout: float = READY_TIMEOUT_S) -> bool:
    """Wait (bounded) until the waiting spare, if any, has warmed up."""
    with _lock:
        spare = _spare
    return spare is not None and spare.wait_ready(timeout)


def reserved() -> tuple[set[int], set[int]]:
    """(pids, driver fds) of the spare waiting now: no test's leak."""
    with _lock:
        spare = _spare
    if spare is None:
        return set(), set()
    return {spare.proc.pid}, {spare.sock.fileno()}


def discard() -> int | None:
    """Stop the waiting spare, if any (at exit, at the end of a pytest session); returns
    its exit status (0: it read EOF and left by itself, negative: it had to be killed)."""
    global _spare
    with _lock:
        spare, _spare = _spare, None
    return None if spare is None else _drop(spare)


def _drop(spare: Spare) -> int | None:
    spare.sock.close()  # a spare that reads EOF before its setup exits at once
    try:
        return spare.proc.wait(2.0)
    except subprocess.TimeoutExpired:
        spare.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            spare.proc.wait(2.0)
        return spare.proc.returncode


atexit.register(discard)
