"""Starting Python children by forking the (already warmed-up) bootstrap host.

A fresh interpreter per child costs ~100 ms of imports (asyncio alone is most of it);
32 children on 2 cores take seconds. A child whose command line is
`<this python> -m <module> args...` is instead forked from the host, which has those
imports done and the module's code compiled, and runs it as `__main__` in the forked
process (as `python -m` would). It gets exactly
what an exec'd child would: its own pipes on fds 1 and 2, /dev/null on fd 0, its own
environment and argv, no other inherited descriptor, and death with the host.

Off when MESHLOG_FORK_CHILDREN=0, and while coverage is measuring the host (a forked
child would share its data file): such children are exec'd as usual.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import gc
import importlib
import importlib.util
import os
import runpy
import signal
import sys
import traceback
import types
from collections.abc import Mapping, Sequence
from importlib.machinery import ModuleSpec
from types import CodeType

from . import bytecode
from .procs import start_child_process


def forkable_module(argv: Sequence[str]) -> str | None:
    """The module to run if `argv` is `<this python> -m module ...` and forking is on."""
    if os.environ.get("MESHLOG_FORK_CHILDREN", "1") == "0":
        return None
    if (
        len(argv) < 3
        or argv[1] != "-m"
        or os.path.realpath(argv[0]) != os.path.realpath(sys.executable)
    ):
        return None
    coverage = sys.modules.get("coverage")
    if coverage is not None and coverage.Coverage.current() is not None:
        return None
    return argv[2]


_MAIN: dict[str, tuple[CodeType, ModuleSpec]] = {}
"""module -> the compiled code `-m module` runs, and its spec (compiled once per host)."""


def warm_up(module: str) -> None:
    """Import what every child needs once, in the host, before the first fork, and
    compile what `-m module` runs (for a package, its `__main__`, whose imports then cost
    no child either; with PYTHONDONTWRITEBYTECODE each child compiled it anew)."""
    importlib.import_module("pytest_meshlog.stack.child")
    with contextlib.suppress(ImportError):  # the child will report it, as an exec'd one would
        importlib.import_module(module)
        main = _main_code(module)
        if main is not None:
            _MAIN[module] = main
            if main[1].name != module:
                importlib.import_module(main[1].name)


def _main_code(module: str) -> tuple[CodeType, ModuleSpec] | None:
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.submodule_search_locations is not None:
        spec = importlib.util.find_spec(f"{module}.__main__")
    if spec is None or spec.loader is None or not hasattr(spec.loader, "get_code"):
        return None
    code = spec.loader.get_code(spec.name)
    return None if code is None else (code, spec)


def _run_as_main(module: str, args: Sequence[str]) -> None:
    """What `python -m module args` does, with the code compiled in the host; falls back
    to runpy for a module the host did not warm."""
    main = _MAIN.get(module)
    if main is None:
        sys.argv = [module, *args]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    code, spec = main
    namespace = types.ModuleType("__main__")
    namespace.__dict__.update(
        __file__=spec.origin, __loader__=spec.loader, __package__=spec.parent,
        __spec__=spec, __cached__=None, __builtins__=builtins,
    )  # fmt: skip
    sys.modules["__main__"] = namespace
    sys.argv = [spec.origin or module, *args]
    exec(code, namespace.__dict__)


class ForkedChild:
    """The parts of `subprocess.Popen` the host uses, for a forked child."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class StartGate:
    """Holds the children of one spawn until the host has forked them all. Children that
    start at once compete for the CPU with the host still forking the rest: on 2 cores,
    forking 32 took ~200 ms that way and ~70 ms behind the gate."""

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()

    def wait(self) -> None:
        """In a child: block until the host opens the gate (or dies)."""
        os.close(self.write_end)
        while os.read(self.read_end, 1):
            pass
        os.close(self.read_end)

    def open(self) -> None:
        """In the host, once every child of the batch is forked (EOF releases them)."""
        for fd in (self.read_end, self.write_end):
            with contextlib.suppress(OSError):
                os.close(fd)


def fork_module(
    module: str,
    args: Sequence[str],
    env: Mapping[str, str],
    keep: Sequence[int] = (),
    gate: StartGate | None = None,
) -> tuple[ForkedChild, int, int]:
    """Fork a child running `python -m module args...`, with the fds in `keep` left open
    (as `pass_fds` does), held at `gate` until it opens; returns (child, stdout_r,
    stderr_r)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # nothing of the host's may be written twice
    pid = os.fork()
    if pid == 0:  # the child: never returns
        if gate is not None:
            gate.wait()
        _run_child(module, args, env, out_w, err_w, keep)
    with contextlib.suppress(OSError):  # also here, so it holds before the child runs
        os.setpgid(pid, pid)
    os.close(out_w)
    os.close(err_w)
    return ForkedChild(pid), out_r, err_r


def _run_child(
    module: str,
    args: Sequence[str],
    env: Mapping[str, str],
    out_w: int,
    err_w: int,
    keep: Sequence[int],
) -> None:
    code = 1
    try:
        gc.freeze()  # the host's objects are never collected here (no finaliser may close a reused fd)
        start_child_process()  # dies with the host; leads its own process group
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        low = 3
        for fd in sorted(fd for fd in keep if fd >= 3):  # close every other inherited fd
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, _max_fd())
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(
                sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler
            )
        asyncio.events._set_running_loop(None)  # the host's loop is not this process's
        _adopt_environ(env)
        bytecode.adopt(env)  # the host may write bytecode to a shared cache; the child not
        sys.modules.pop(f"{module}.__main__", None)  # warmed as a module; runs as __main__
        _run_as_main(module, args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(code)


def _adopt_environ(env: Mapping[str, str]) -> None:
    """Make os.environ (and the C environment under it) `env`, changing only what differs:
    a child's environment is mostly the host's, and `os.environ.clear()` lists every key
    again for each key it removes (with the refill, ~0.6 ms of each forked child's start)."""
    for key in [k for k in os.environ if k not in env]:
        del os.environ[key]
    for key, value in env.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (ValueError, OSError):
        return 65536
