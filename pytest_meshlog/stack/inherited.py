"""Sockets a process inherits as a descriptor named by an environment variable.

The variable is consumed, so a process this one starts never mistakes some other fd for it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping


def inherited_socket(
    variable: str, also: MutableMapping[str, str] | None = None
) -> socket.socket | None:
    """The socket on the descriptor `variable` names (removed from the environment, and from
    `also` if given), or None if there is none or it cannot be opened."""
    raw = os.environ.pop(variable, None)
    if also is not None:
        also.pop(variable, None)
    if raw is None or not raw.isdigit():
        return None
    try:
        return socket.socket(fileno=int(raw))
    except OSError:
        return None
