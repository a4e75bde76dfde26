"""The driver's request/answer link to a helper process, and the helper's end of it.

A foreign runtime's driver side (Monarch's client, Ray's driver program) runs in a helper
process the harness can kill, because a runtime call can hang below Python. The harness
writes one JSON command a line on the helper's stdin; the helper answers each with one
JSON line on a pipe of its own (its stdout and stderr are the runtime's console, which
nothing else may write to). Each answer is awaited under a deadline: a helper that does
not answer in time, or that exits, is killed with everything below it and the call that
was waiting is named in the MeshError.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, TextIO

from ..stack import MeshError

EXIT_WAIT_S = 5.0
"""How long a helper that closed its answer pipe gets to exit, for its status."""
READ_SIZE = 65536


def spawn_with_reply_pipe(
    argv: Sequence[str],
    *,
    stdout: int | IO[Any],
    stderr: int | IO[Any],
    env: Mapping[str, str],
    cwd: str | os.PathLike[str],
) -> tuple[subprocess.Popen[bytes], int]:
    """Start `argv` + the write end of a new pipe (as a number) in a session of its own,
    its stdin a pipe; the process and the read end. Only the helper holds the write end,
    so the read end sees EOF as soon as the helper (and whatever inherited it) is gone."""
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [*argv, str(write_fd)],
            stdin=subprocess.PIPE, stdout=stdout, stderr=stderr, pass_fds=(write_fd,),
            env=env, cwd=cwd, start_new_session=True,
        )  # fmt: skip
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return proc, read_fd


def read_answer(fd: int, wait: float) -> bytes | None:
    """One answer line from `fd`; b"" when the helper closed the pipe, None after `wait`."""
    deadline = time.monotonic() + wait
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        buf = b""
        while time.monotonic() < deadline:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(fd, READ_SIZE)
            if not chunk:
                return b""
            buf += chunk
            if buf.endswith(b"\n"):
                return buf
    return None


@dataclass(frozen=True)
class Wording:
    """How a backend names its helper and its calls in the link's MeshErrors: each
    backend's messages stay its own (tests and users read them)."""

    helper: str
    """The helper as the messages name it: `the Monarch helper`."""
    call: str
    """What stands before a call's name in `failed after` (`Monarch call `, or nothing)."""
    unit: str
    """What follows a duration in seconds: `s` or ` s`."""
    no_answer: Callable[[str, float, float], str]
    """The message of a call (its name, how long it took, the wait) left unanswered."""


class HelperLink:
    """The harness's end: one command at a time (a lock), each answer under a deadline.
    `on_lost` kills the helper and everything below it: it runs when the helper left a
    call unanswered or exited, and when an answer says the helper is ending (`fatal`);
    it takes the process with `take()`, after which every call is refused."""

    def __init__(
        self, wording: Wording, calls: Mapping[str, str], on_lost: Callable[[], None]
    ) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self._wording = wording
        self._calls = calls
        self._on_lost = on_lost
        self._reply: int | None = None
        self._lock = threading.Lock()

    def start(
        self,
        argv: Sequence[str],
        *,
        stdout: IO[Any],
        stderr: IO[Any],
        env: Mapping[str, str],
        cwd: str | os.PathLike[str],
    ) -> None:
        """Start the helper (see `spawn_with_reply_pipe`)."""
        self.proc, self._reply = spawn_with_reply_pipe(
            argv, stdout=stdout, stderr=stderr, env=env, cwd=cwd
        )

    @property
    def pid(self) -> int | None:
        """The helper's pid, while the link has it (None once it was taken to be ended)."""
        return None if self.proc is None else self.proc.pid

    def take(self) -> subprocess.Popen[bytes] | None:
        """The helper's process, which the link forgets: the caller is ending it."""
        proc, self.proc = self.proc, None
        return proc

    def call(self, cmd: str, wait: float, **args: Any) -> dict[str, Any]:
        """One command; its answer, or MeshError naming the call (`calls[cmd]`) and how
        long it was waited for."""
        words = self._wording
        what = self._calls.get(cmd, cmd)
        with self._lock:
            proc = self.proc
            if proc is None or proc.stdin is None or self._reply is None:
                raise MeshError(f"{what} was never called: {words.helper} had exited")
            start = time.monotonic()
            try:
                proc.stdin.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())
                proc.stdin.flush()
            except OSError as exc:
                raise MeshError(f"{words.helper} is gone ({what}: {exc})") from None
            line = read_answer(self._reply, wait)
            took = time.monotonic() - start
        if not line:  # b"": the helper closed its end (it is exiting); None: no answer in time
            code = None
            if line is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = proc.wait(EXIT_WAIT_S)
            self._on_lost()
            if line is not None:
                raise MeshError(
                    f"{words.helper} exited ({code}) during {what} after {took:.1f}{words.unit}"
                )
            raise MeshError(words.no_answer(what, took, wait))
        answer: dict[str, Any] = json.loads(line)
        if answer.get("fatal"):  # the helper is ending: later calls are never made
            self._on_lost()
        if not answer.get("ok"):
            raise MeshError(
                f"{words.call}{what} failed after {took:.1f}{words.unit}: {answer.get('error')}"
            )
        return answer

    def close(self) -> None:
        """Close the harness's end of the answer pipe (the helper must be ended first)."""
        if self._reply is not None:
            os.close(self._reply)
            self._reply = None


# -- the helper's end ---------------------------------------------------------------------


def open_reply(arg: str) -> TextIO:
    """The answer pipe whose number the harness passed: line-buffered text, and not
    inherited by what the runtime starts (a runtime process holding it would keep the
    harness from seeing the helper's end)."""
    fd = int(arg)
    os.set_inheritable(fd, False)
    return os.fdopen(fd, "w", buffering=1, encoding="utf-8")


def serve(driver: object, commands: Iterable[str], reply: TextIO) -> None:
    """Answer each command line with the driver method of its name (`{"ok": true, ...its
    result}`, or `{"ok": false, "error", "traceback"}` when it raised) until `exit`, which
    is answered and ends the loop; an end of `commands` ends it too."""
    for raw in commands:
        cmd = json.loads(raw)
        name = cmd.pop("cmd")
        if name == "exit":
            reply.write(json.dumps({"ok": True}) + "\n")
            break
        try:
            answer: dict[str, Any] = {"ok": True, **getattr(driver, name)(**cmd)}
        except Exception as exc:
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc()}  # fmt: skip
        reply.write(json.dumps(answer) + "\n")
