"""A patch module for `MESHLOG_STACK_PATCH` (tests/test_stack_patches.py): records each
process that called it, with its role, in the folder `PATCH_PROBE_DIR` names."""

from __future__ import annotations

import os


def record(role: str) -> None:
    folder = os.environ["PATCH_PROBE_DIR"]
    with open(os.path.join(folder, f"{role}-{os.getpid()}"), "w") as f:
        f.write(os.environ.get("MESHLOG_RANK", "-"))
