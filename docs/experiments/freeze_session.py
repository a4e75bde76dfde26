"""Freeze a whole pytest session, as a stalled machine would, and print how it ends.

A VM whose vCPUs are not run (the kernel then logs `soft lockup`) stops every process at
once; SIGSTOP of the session's process tree does the same. This starts pytest with the
given arguments, waits until a mesh's driver journals `stop_begin`, waits DELAY seconds
more, stops every process of the tree for SECONDS, resumes them, and prints the lines
of pytest's output that say how it ended (docs/failures.md, the stop timeout).

    python docs/experiments/freeze_session.py 0 45 -- --meshlog \
        "meshlog::test_channel_closed_early[procs=2]" -p no:randomly

Run it from the repository's root. Its temporary folders are kept (their path is printed).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def _stop_began(base: Path) -> bool:
    return any(b"stop_begin" in j.read_bytes() for j in base.glob("**/journal/driver.jsonl"))


def main(argv: list[str]) -> int:
    delay, seconds = float(argv[0]), float(argv[1])
    args = argv[argv.index("--") + 1 :]
    base = Path(tempfile.mkdtemp(prefix="freeze-session-"))
    session = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--basetemp", str(base / "t"),
         "-o", "tmp_path_retention_policy=all", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not _stop_began(base) and session.poll() is None:
        if time.monotonic() > deadline:
            session.kill()
            raise SystemExit("no stop_begin journaled within 120 s")
        time.sleep(0.002)  # polling a file nothing announces
    time.sleep(delay)  # the moment of the freeze, after the stop began
    tree = [psutil.Process(session.pid)]
    with contextlib.suppress(psutil.NoSuchProcess):
        tree += tree[0].children(recursive=True)
    for proc in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.suspend()
    print(f"froze {len(tree)} processes {delay} s after stop_begin, for {seconds} s", flush=True)
    try:
        time.sleep(seconds)  # the freeze itself
    finally:
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.resume()
    output = session.communicate(timeout=300)[0].decode(errors="replace")
    for line in output.splitlines():
        if "timed out" in line or "not run" in line or " passed" in line or " failed" in line:
            print("  " + line[:400])
    print(f"temporary folders: {base}")
    return session.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
