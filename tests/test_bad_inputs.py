"""The bad-input table (issue 7): each bad input gets a clear error naming it, raised before
anything starts, and loses nothing already accepted. Rows tested elsewhere are named."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from fake_procs import FakeProcs
from pytest_meshlog.harness import MeshHarness
from pytest_meshlog.stack import ChildSpec, ConfigError, LoggingMeshClient, StackConfig

# Covered elsewhere, one test per row:
#   bad values of every knob ............ tests/test_config.py (ConfigError names variable and value)
#   invalid scripts ...................... tests/test_fake_procs_script.py (ScriptError names step, value)
#   unknown marker arguments ............. tests/test_plugin.py (collection error naming the value)
#   a disk that fills while writing ...... catalog meshlog::test_disk_full (files on /dev/full: ENOSPC)
#   a file write cut short mid-line ...... tests/test_file_write_errors.py (RLIMIT_FSIZE, then raised)
#   a child faster than the client ....... catalog meshlog::test_kill_under_backpressure (slow_client)


def _descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.mark.parametrize("kind", ["under_a_file", "is_a_file"])
def test_unusable_log_dir_is_refused_before_anything_spawns(tmp_path: Path, kind: str) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_text("not a directory")
    log_dir = blocker / "logs" if kind == "under_a_file" else blocker
    before = _descendants()
    client = LoggingMeshClient(StackConfig(env="prod", log_dir=str(log_dir), enable_log_forwarding=True),
                               workdir=tmp_path / "mesh")  # fmt: skip
    try:
        with pytest.raises(ConfigError, match=f"log dir '{log_dir}'"):
            client.spawn([ChildSpec(["true"])])
        assert _descendants() == before, "nothing may start for a refused log dir"
    finally:
        client.close()


def test_a_log_dir_not_in_utf8_is_refused_naming_it(
    meshlog: MeshHarness, fake_procs: FakeProcs, tmp_path: Path
) -> None:
    log_dir = tmp_path / os.fsdecode(b"logs-\xff\xfe")  # msgpack raised UnicodeEncodeError
    before = _descendants()
    with pytest.raises(ConfigError, match=r"log_dir='.*logs-\\udcff\\udcfe' is not valid UTF-8"):
        meshlog.spawn([fake_procs.partial_line_writer(lines=3)], env="prod", log_dir=log_dir)
    assert _descendants() == before, "nothing may start for a refused log dir"


def test_missing_log_dir_is_created(
    meshlog: MeshHarness, fake_procs: FakeProcs, tmp_path: Path
) -> None:
    log_dir = tmp_path / "not" / "yet" / "there"
    mesh = meshlog.spawn([fake_procs.partial_line_writer(lines=3)], env="prod", log_dir=log_dir)
    mesh.wait_scripts()
    report = mesh.stop()
    report.assert_clean()
    assert report.files and all(f.startswith(str(log_dir)) for f in report.files)


def test_a_one_mebibyte_line(meshlog: MeshHarness, fake_procs: FakeProcs) -> None:
    """A 1 MiB line is cut at 4096 bytes (on a character boundary) everywhere, the line
    after it is intact, and the tee's memory stays bounded (see tests/test_framing.py)."""
    mesh = meshlog.spawn([fake_procs.long_liner(nbytes=1 << 20)], env="prod")
    mesh.wait_scripts()
    report = mesh.stop()
    report.assert_clean()
    first = mesh.output.paths[0].read_bytes().split(b"\n")[0]
    assert first.endswith(b"... [TRUNCATED]") and len(first) < 4096 + 64
    assert os.path.getsize(mesh.output.paths[0]) < 10_000
