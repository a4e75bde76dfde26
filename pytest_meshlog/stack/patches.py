"""A documented way to patch the stack from outside, in its own processes.

`MESHLOG_STACK_PATCH=package.module:function` makes every bootstrap host and every child
import that module and call `function(role)` (role `"host"` or `"child"`) before it starts
serving: a test tool can change a class or a function of the stack in the processes where
it runs, without the stack knowing the tool. The self-test's broken variants use it.
"""

from __future__ import annotations

import os
from importlib import import_module
from typing import Literal

PATCH_ENV = "MESHLOG_STACK_PATCH"

Role = Literal["host", "child"]


class PatchError(RuntimeError):
    """`MESHLOG_STACK_PATCH` names something this process cannot import or call."""


def apply_patches(role: Role) -> None:
    """Call the patch function `MESHLOG_STACK_PATCH` names, if any, for this process."""
    spec = os.environ.get(PATCH_ENV, "")
    if not spec:
        return
    module_name, _, function_name = spec.partition(":")
    try:
        function = getattr(import_module(module_name), function_name or "patch")
    except (ImportError, AttributeError) as exc:
        raise PatchError(f"{PATCH_ENV}={spec!r}: {exc}") from None
    function(role)
