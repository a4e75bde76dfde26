"""Entry point of a bootstrap host process: `python -m pytest_meshlog.stack.host`.

Kept apart from `bootstrap` so that module is imported once, under its own name, and
patches applied to it (the self-test's broken variants) are the classes that run.

The host leaves with `os._exit` once its work is done: everything it owes is already
journaled, sent or closed, and interpreter teardown took ~40 ms of every `stop()`.
"""

import contextlib
import os
import sys

from .child import save_coverage
from .host_control import main

if __name__ == "__main__":
    code = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    save_coverage()
    os._exit(code)
