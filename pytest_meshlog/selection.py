"""Catalog items named on the command line: `pytest --meshlog "meshlog::test_happy_path[procs=1]"`.

Catalog items are not files, so pytest cannot resolve their ids as collection arguments.
`pytest_load_initial_conftests` (the documented place for a plugin to rewrite the command
line) takes them out of the positional arguments before pytest resolves them; the catalog
then keeps only the named items. When every positional argument named a catalog item,
nothing else is collected, as with any node id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

CATALOG = "meshlog"
"""The catalog's collector id: items read `meshlog::test_<scenario>[<params>]`."""

_ALIAS = CATALOG + "/"  # the ids of pytest-meshlog 0.1: `meshlog/<scenario>[<params>]`


@dataclass(frozen=True)
class Selection:
    """Catalog ids named as positional arguments; `only`: nothing else was named."""

    ids: tuple[str, ...] = ()
    only: bool = False

    def to_dict(self) -> dict[str, object]:
        return {"ids": list(self.ids), "only": self.only}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Selection:
        ids = data.get("ids", [])
        assert isinstance(ids, list)
        return cls(tuple(str(i) for i in ids), bool(data.get("only", False)))

    def keeps(self, nodeid: str) -> bool:
        """Whether an item with this id was named (always, when nothing was)."""
        return not self.ids or any(_matches(nodeid, wanted) for wanted in self.ids)

    def unmatched(self, nodeids: Iterable[str]) -> list[str]:
        present = list(nodeids)
        return [w for w in self.ids if not any(_matches(n, w) for n in present)]


def catalog_id(arg: str, invocation_dir: Path) -> str | None:
    """The catalog id `arg` names, or None when it is an ordinary argument (a path that
    exists is always the user's own, even if it is called `meshlog`)."""
    if arg == CATALOG or arg.startswith(CATALOG + "::"):
        wanted = arg
    elif arg.startswith(_ALIAS):
        wanted = f"{CATALOG}::test_{arg.removeprefix(_ALIAS)}"
    else:
        return None
    if (invocation_dir / CATALOG).exists():
        return None
    return wanted


def take_catalog_ids(
    args: list[str], positionals: Sequence[str], invocation_dir: Path
) -> Selection:
    """Remove the catalog ids among `positionals` from `args` (in place) and return them."""
    ids: list[str] = []
    for arg in positionals:
        wanted = catalog_id(arg, invocation_dir)
        if wanted is None:
            continue
        ids.append(wanted)
        last = len(args) - 1 - args[::-1].index(arg)  # the user's own token comes last
        del args[last]
    return Selection(tuple(ids), only=bool(ids) and len(ids) == len(positionals))


def _matches(nodeid: str, wanted: str) -> bool:
    """pytest's own rule: a node id selects itself and everything below it, and a
    function's id without `[...]` selects all its parametrisations."""
    if nodeid == wanted or wanted == CATALOG:
        return True
    return "[" not in wanted and nodeid.split("[", 1)[0] == wanted
