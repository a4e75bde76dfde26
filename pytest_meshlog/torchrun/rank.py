"""What torchrun runs as each rank: `python -m pytest_meshlog.torchrun.rank SCRIPTS RECORDS PIDS`.

The rank comes from torchrun's own environment (`LOCAL_RANK`; one node, so it is also
`RANK`), never from the script. The process leaves its pid in `PIDS/rank<r>` (the harness
signals and watches ranks by it) and then becomes the fake_procs child of that rank
(`exec`, so torchrun's pid is the script's): the stand-in runtime, on which SIGTERM (what
torchrun sends when it tears the group down) stops the script as a mesh's stop does.
Deliberately tiny: nothing of torch is imported here.
"""

from __future__ import annotations

import os
import sys


def child_argv(scripts_dir: str, record_dir: str, rank: int) -> list[str]:
    """The fake_procs command line of `rank` (the stand-in runtime, rank and record dir
    given explicitly)."""
    script = os.path.join(scripts_dir, f"rank{rank}.json")
    return [sys.executable, "-m", "fake_procs", "--standalone", "--rank", str(rank),
            "--record-dir", record_dir, script]  # fmt: skip


def main(argv: list[str]) -> None:
    scripts_dir, record_dir, pids_dir = argv
    rank = int(os.environ["LOCAL_RANK"])
    path = os.path.join(pids_dir, f"rank{rank}")
    with open(path + ".tmp", "w", encoding="ascii") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)  # whole or absent: the driver polls for it
    args = child_argv(scripts_dir, record_dir, rank)
    os.execv(args[0], args)


if __name__ == "__main__":
    main(sys.argv[1:])
