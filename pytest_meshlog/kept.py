"""Where a failed mesh's own record (journal, client output, scripts, files) stays.

A failure that does not come back is investigated from that record, so a failed test's
report names the folder and says whether pytest will keep it. A mesh's folder lives in
the test's `tmp_path`. Under `tmp_path_retention_policy = "failed"` pytest removes the
`tmp_path` of a test whose call passed, but the `meshlog` fixture's check fails at
teardown, after the call passed: the folders of such a test are moved first to one made
with `tmp_path_factory`, which pytest keeps when the session fails.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from pathlib import Path

import pytest

from .harness import Mesh

POLICY = "tmp_path_retention_policy"


def keep_failed(
    meshes: Iterable[Mesh], test_name: str, config: pytest.Config, factory: pytest.TempPathFactory
) -> None:
    """Move each mesh's folder out of the test's `tmp_path` if pytest would remove it with
    the `tmp_path` (the "failed" policy), and point the mesh at its new place. Called while
    the failure propagates: a folder that cannot be moved stays (the report then says it
    is gone), and the failure is never hidden behind an error of this."""
    if config.getini(POLICY) != "failed":
        return
    present = [m for m in meshes if m.workdir.is_dir()]
    if not present:
        return
    with contextlib.suppress(OSError):
        kept = factory.mktemp(re.sub(r"\W", "_", test_name)[:30] + "-meshlog")
        for mesh in present:
            target = kept / mesh.workdir.name
            mesh.workdir.rename(target)
            mesh.workdir = target


def on_disk(workdir: Path, config: pytest.Config) -> str:
    """The folder, what is in it, and whether pytest will keep it."""
    policy = config.getini(POLICY)
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in workdir.iterdir())
    except FileNotFoundError:
        return f"{workdir}: already removed ({POLICY} = {policy})"
    except OSError as exc:
        return f"{workdir}: not readable ({exc.strerror})"
    count = config.getini("tmp_path_retention_count")
    fate = (
        "removed by pytest at the end of this session"
        if policy == "none" and not config.getoption("basetemp")
        else "kept by pytest with the session's temporary directories"
    )
    return (
        f"{workdir}\n  {'  '.join(names) or '(empty)'}\n"
        f"  {fate} ({POLICY} = {policy}, tmp_path_retention_count = {count})"
    )
