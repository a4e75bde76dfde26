"""Entry point of a bootstrap host process: `python -m pytest_meshlog.stack.host`.

Kept apart from `bootstrap` so that module is imported once, under its own name, and
patches applied to it (the self-test's broken variants) are the classes that run.
"""

import sys

from .bootstrap import main

if __name__ == "__main__":
    sys.exit(main())
