"""The house's one-way rules, read from the source: data and imports flow script -> child ->
tee -> forwarder -> client -> evidence -> oracle -> report.

* `pytest_meshlog.stack` imports nothing of the harness, the plugin or the self-test;
* `fake_procs` imports nothing of `pytest_meshlog` but the stack's public child runtime;
* no import cycles among modules (typing-only imports under `TYPE_CHECKING` excepted).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pytest_meshlog", "fake_procs")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:` (imports for annotations only)."""
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for n in ast.walk(node))
    return (n for n in ast.walk(tree) if id(n) not in typing_only)


def _known(name: str) -> str | None:
    """The longest module of ours that `name` is, or lives in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """Our modules that `module` imports at run time (also inside functions)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {k for k in map(_known, found) if k is not None and k != module}


GRAPH = {module: imports_of(module) for module in MODULES}


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if m.startswith("pytest_meshlog.stack"))
)
def test_the_stack_imports_only_the_stack(module: str) -> None:
    outside = sorted(
        t
        for t in GRAPH[module]
        if not t.startswith("pytest_meshlog.stack") and t != "pytest_meshlog"
    )
    assert outside == [], f"{module} imports {outside}: the stack never imports the harness"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("fake_procs")))
def test_fake_procs_imports_only_the_child_runtime(module: str) -> None:
    outside = sorted(
        t
        for t in GRAPH[module]
        if not t.startswith("fake_procs")
        and t not in ("pytest_meshlog", "pytest_meshlog.stack.child")
    )
    assert outside == [], f"{module} imports {outside}"


def test_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert cycles == [], f"import cycles: {cycles}"


def test_the_check_sees_an_import_inside_a_function() -> None:
    """The checker itself can fail: the plugin imports the session lazily in places."""
    assert "pytest_meshlog.session" in GRAPH["pytest_meshlog.plugin"]
    assert "pytest_meshlog.stack.child" in GRAPH["fake_procs.__main__"]


def _journaled_literals(module: str) -> list[str]:
    """Journal calls in `module` whose event name is a bare string, not a `journal.Ev`."""
    out = []
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if name.endswith("journal") and isinstance(first, ast.Constant):
                out.append(f"line {node.lineno}: {first.value!r}")
    return out


@pytest.mark.parametrize(
    "module",
    sorted(m for m in MODULES if m.startswith(("pytest_meshlog.stack", "pytest_meshlog.selftest"))),
)
def test_the_stack_journals_events_by_name(module: str) -> None:
    assert _journaled_literals(module) == [], f"{module}: use pytest_meshlog.stack.journal.Ev"


def test_every_journal_event_is_documented() -> None:
    """docs/architecture.md lists each event of `Ev` with its fields, and no other."""
    from pytest_meshlog.stack.journal import Ev

    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = doc[doc.index("## The journal") :]
    table = table[: table.index("\n## ")]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`" in line]
    cells = [re.sub(r"\([^()]*\)", "", row.split("|")[2]) for row in rows]  # not the notes
    listed = {name for cell in cells for name in re.findall(r"`([a-z_]+)(?:\{[^`]*\})?`", cell)}
    assert sorted(listed - {e.value for e in Ev}) == [], "documented, but not an Ev"
    assert sorted({e.value for e in Ev} - listed) == [], "an Ev the journal table does not list"


def test_an_event_name_is_its_string() -> None:
    """A journal read back holds plain strings; they compare equal to the names."""
    from pytest_meshlog.stack.journal import Ev

    assert Ev.BARRIER_STARTED == "barrier_started" and f"{Ev.EOF}" == "eof"
    assert {"ev": "eof"}["ev"] == Ev.EOF
