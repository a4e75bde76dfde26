"""Private directories of the stack (sockets, work dirs): 0700, short paths, and a record
of who made each, so the leak check can name the code that left one behind."""

from __future__ import annotations

import itertools
import json
import os
import sys
from dataclasses import dataclass

from .procs import claim


@dataclass(frozen=True)
class PrivateDir:
    """A directory `private_dir` made: where, by which process and which code."""

    path: str
    pid: int
    creator: str
    seq: int


_SEQ = itertools.count(1)
PRIVATE_DIRS: list[PrivateDir] = []
"""Every private directory this process made, oldest first (the leak check reads it)."""

PRIVATE_DIR_LOG_ENV = "MESHLOG_PRIVATE_DIR_LOG"
"""If set, a file where every process of the stack appends one JSON line per private
directory it makes, so directories made by hosts and children are attributable too."""


def private_dir(prefix: str = "ml-") -> str:
    """A 0700 directory with a short path (Unix socket paths are limited to ~107 bytes)."""
    import tempfile

    base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    path = tempfile.mkdtemp(prefix=prefix, dir=base)
    os.chmod(path, 0o700)
    claim(path)  # a killed maker cannot remove it: the next driver does (`sweep_stale`)
    caller = sys._getframe(1)
    code = caller.f_code
    name = getattr(code, "co_qualname", code.co_name)
    where = f"{name} ({os.path.basename(code.co_filename)}:{caller.f_lineno})"
    record = PrivateDir(path, os.getpid(), where, next(_SEQ))
    if len(PRIVATE_DIRS) >= 4096:  # a long-lived process: forget the ones already removed
        PRIVATE_DIRS[:] = [d for d in PRIVATE_DIRS if os.path.lexists(d.path)]
    PRIVATE_DIRS.append(record)
    log = os.environ.get(PRIVATE_DIR_LOG_ENV)
    if log:
        line = json.dumps({"path": path, "pid": record.pid, "creator": record.creator})
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        except OSError:
            return path
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
    return path
