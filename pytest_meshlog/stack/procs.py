"""Process helpers shared by the driver and the bootstrap."""

from __future__ import annotations

import ctypes
import signal


def set_parent_death_signal() -> None:
    """preexec_fn: die with SIGKILL if the spawning thread goes away, so nothing is orphaned."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
