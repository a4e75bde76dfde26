"""Bytecode that a driver's hosts share when Python may not write it next to the source.

With `PYTHONDONTWRITEBYTECODE` set (usual in containers, and on CI machines) every host
compiled the stack's modules from source when it started: about 30 ms of a cold host's
~150 ms. Given a folder (the plugin offers one in pytest's session temp dir), hosts keep
their bytecode there instead (`PYTHONPYCACHEPREFIX`): the first host compiles, the rest
load. Children are not affected: a forked child takes both settings back from the
environment it was given, and an exec'd child gets that environment as it is.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

DONT_WRITE = "PYTHONDONTWRITEBYTECODE"
PREFIX = "PYTHONPYCACHEPREFIX"


def host_env(env: Mapping[str, str], cache: Path | None) -> dict[str, str]:
    """The environment to start a host with: `env`, writing bytecode to `cache` if `env`
    forbids writing it and names no cache of its own (else `env` unchanged)."""
    out = dict(env)
    if cache is None or not out.get(DONT_WRITE) or out.get(PREFIX):
        return out
    del out[DONT_WRITE]
    out[PREFIX] = str(cache)
    return out


def adopt(env: Mapping[str, str]) -> None:
    """In a child forked from a host: the bytecode settings its own environment says."""
    sys.dont_write_bytecode = bool(env.get(DONT_WRITE))
    sys.pycache_prefix = env.get(PREFIX) or None
