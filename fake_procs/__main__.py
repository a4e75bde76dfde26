"""`python -m fake_procs [--standalone] [--rank N] [--record-dir DIR] SCRIPT.json`

Without `--standalone` the script runs as a mesh child under
`pytest_meshlog.stack.child.run_child` (rank and record dir come from its environment).
With it, a stand-in runtime is used (see standalone.py); rank and record dir come from
the options, else MESHLOG_RANK / MESHLOG_RECORD_DIR.
Deliberately light: no argparse, no Faker, no validation (the driver did that).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from .executor import execute

USAGE = "usage: python -m fake_procs [--standalone] [--rank N] [--record-dir DIR] SCRIPT.json"


def main(argv: list[str]) -> None:
    standalone, rank, record_dir, path = False, None, None, None
    args = iter(argv)
    try:
        for arg in args:
            if arg == "--standalone":
                standalone = True
            elif arg == "--rank":
                rank = int(next(args))
            elif arg == "--record-dir":
                record_dir = next(args)
            elif path is None and not arg.startswith("--"):
                path = arg
            else:
                raise ValueError(arg)
    except (StopIteration, ValueError):
        path = None
    if path is None:
        print(USAGE, file=sys.stderr)
        raise SystemExit(2)
    with open(path, "rb") as f:
        data: dict[str, Any] = json.load(f)

    if standalone:
        from .standalone import run_standalone

        env_rank = int(os.environ.get("MESHLOG_RANK", "0"))
        env_dir = os.environ.get("MESHLOG_RECORD_DIR") or None
        run_standalone(
            lambda rt: execute(data, rt),
            env_rank if rank is None else rank,
            env_dir if record_dir is None else record_dir,
        )

    from pytest_meshlog.stack.child import run_child

    run_child(lambda rt: execute(data, rt))


if __name__ == "__main__":
    main(sys.argv[1:])
