"""Per-rank bookkeeping of a foreign runtime's mesh: the test's kills, what each rank's
script wrote and how it said it ended, and the bounded wait for every rank to have ended.

The runtimes do not say how a rank ended (a Monarch proc or a Ray worker outlives its
script; torchrun's ranks are its children, not ours to reap), so the backends read it from
the rank's fake_procs progress record, its process and the signals the test sent it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fake_procs import Script, emitted, expected_lines, progress_path, read_progress

from ..report import Stream
from ..stack import ExitInfo, MeshError
from .processes import pid_running

CRASH_SIGNALS = {
    "sigkill": int(signal.SIGKILL),
    "sigsegv": int(signal.SIGSEGV),
    "abort": int(signal.SIGABRT),
}
"""A script's `crash <how>` step, as the signal that ended its process."""
PAUSES = (signal.SIGSTOP, signal.SIGCONT, signal.SIGTSTP)
"""Signals that pause or resume a rank: they end nothing, so they are not recorded."""
POLL_S = 0.01
STREAMS: tuple[Stream, Stream] = ("stdout", "stderr")


def write_scripts(scripts: Sequence[Script], scripts_dir: Path, record_dir: str) -> None:
    """Each rank's script as `rank<N>.json` in `scripts_dir`, where the runtime's process
    for that rank reads it, and the folder its progress records go to (both made)."""
    scripts_dir.mkdir(parents=True, exist_ok=True)
    Path(record_dir).mkdir(parents=True, exist_ok=True)
    for rank, script in enumerate(scripts):
        script.write(scripts_dir / f"rank{rank}.json")


def kill_rank(
    killed: MutableMapping[int, int], pids: Mapping[int, int], rank: int, sig: int
) -> None:
    """Send `sig` to `rank`'s process, recorded in `killed` first (unless it only pauses):
    the rank's end is then the test's doing, not its own. A process already gone is no
    error; a rank without a pid is (KeyError)."""
    if sig not in PAUSES:
        killed[rank] = int(sig)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pids[rank], sig)


@dataclass(frozen=True)
class ScriptEnd:
    """How a rank's script said it ended."""

    info: ExitInfo
    ends_process: bool
    """`exit`/`crash`: the script ended its process (it counts once the process is gone);
    `end`/`stop`: the script returned and its process may live on."""


def script_end(record_dir: str, rank: int) -> ScriptEnd | None:
    """The end `rank`'s progress record reports; None while it reports none (running, or
    killed from outside)."""
    record = Path(progress_path(record_dir, rank))
    progress = read_progress(record.read_bytes()) if record.exists() else None
    ending = progress.ending if progress is not None else None
    last = (progress.last_event or "").split() if progress is not None else []
    if ending in ("end", "stop"):
        return ScriptEnd(ExitInfo(0, None), ends_process=False)
    if ending == "exit":
        return ScriptEnd(ExitInfo(int(last[-1]) if last else 1, None), ends_process=True)
    if ending == "crash":
        how = last[-1] if last else "sigkill"
        info = ExitInfo(1, None) if how == "exit" else ExitInfo(None, CRASH_SIGNALS[how])
        return ScriptEnd(info, ends_process=True)
    return None


def outliving_exit(
    record_dir: str, rank: int, pids: Mapping[int, int], killed: Mapping[int, int], died: str
) -> ExitInfo | None:
    """How a rank whose process outlives its script (a Monarch proc, a Ray worker) ended:
    the test's kill once the process is gone; the script's own end (an exit or a crash
    once its process is gone); `died` when the process went without a word; None while
    it still runs its script. The record is read before the process is looked at, so an
    end recorded just before the process went is not taken for a silent death."""
    end = script_end(record_dir, rank)
    is_alive = pid_running(pids.get(rank))
    if rank in killed and not is_alive:
        return ExitInfo(None, killed[rank])
    if end is not None and not (end.ends_process and is_alive):
        return end.info
    if not is_alive:
        return ExitInfo(None, None, killed_by_stack=died)
    return None


def wait_for_exits(
    ranks: Sequence[int],
    exit_info: Callable[[int], ExitInfo | None],
    timeout: float,
    *,
    each_round: Callable[[], None] | None = None,
) -> dict[int, ExitInfo]:
    """Poll `exit_info` for every rank until all have ended; MeshError naming the ranks
    still running once `timeout` has passed. `each_round` runs before each look (e.g. to
    remember new processes of the runtime while they can still be found)."""
    deadline = time.monotonic() + timeout
    while True:
        if each_round is not None:
            each_round()
        infos = {r: exit_info(r) for r in ranks}
        if all(info is not None for info in infos.values()):
            return {r: info for r, info in infos.items() if info is not None}
        if time.monotonic() > deadline:
            missing = [r for r, info in infos.items() if info is None]
            raise MeshError(f"ranks {missing} still running after {timeout:.1f}s")
        time.sleep(POLL_S)


def exits_at_stop(
    ranks: Sequence[int],
    exits: MutableMapping[int, ExitInfo],
    exit_info: Callable[[int], ExitInfo | None],
) -> list[int]:
    """Fill in `exits` once the runtime's stop has run: each rank's end, and a rank still
    running its script ended by the mesh's stop (a normal teardown: code 0). The ranks
    that had not ended before, for the caller to note."""
    stopped = [r for r in ranks if exits.get(r) is None]
    for rank in ranks:
        info = exit_info(rank)
        exits[rank] = info if info is not None else ExitInfo(0, None)
    return stopped


def emitted_by_rank(
    record_dir: str, scripts: Sequence[Script], ranks: Sequence[int]
) -> dict[tuple[int, Stream], bytes]:
    """What each rank wrote to each stream: its script replayed against its progress
    record (never what the runtime delivered); ranks without a record yet are left out."""
    out: dict[tuple[int, Stream], bytes] = {}
    for rank in ranks:
        record = Path(progress_path(record_dir, rank))
        if record.exists():
            em = emitted(scripts[rank], rank, record)
            for stream in STREAMS:
                out[rank, stream] = em.streams[stream]
    return out


def emitted_line_counts(
    by_rank: Mapping[tuple[int, Stream], bytes], *, prefix_with_rank: bool
) -> dict[tuple[int, str], int]:
    """How many lines each (rank, stream) emitted, framed as the oracle frames them: what
    an aggregating runtime's merged rows are credited against (`credit.credit_rows`)."""
    return {
        key: len(expected_lines(data, rank=key[0], prefix_with_rank=prefix_with_rank))
        for key, data in by_rank.items()
    }
