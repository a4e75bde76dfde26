"""A child run as `python -m tests.children.bytecode_probe` (forked by its host): prints
the bytecode settings it runs with (tests/test_bytecode_cache.py)."""

from __future__ import annotations

import os
import sys

from pytest_meshlog.stack.child import ChildRuntime, run_child


def workload(rt: ChildRuntime) -> int:
    line = f"dont_write={sys.dont_write_bytecode} prefix={sys.pycache_prefix}\n"
    with rt.output_lock:
        os.write(1, line.encode())
    return 0


if __name__ == "__main__":
    run_child(workload)
