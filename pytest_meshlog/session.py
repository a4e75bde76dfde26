"""Session-wide harness state: the catalog in the run, the summary, the report, the self-test.

Per-test results travel as plain attributes of the teardown TestReport, so they reach the
controller under pytest-xdist the same way they reach this process without it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from collections.abc import Generator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from .selection import CATALOG
from .summary import ReportEntry, summary_lines

if TYPE_CHECKING:
    from .harness import Mesh
    from .report import TeardownReport
    from .settings import Settings

_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


class MeshlogSession:
    """Registered as a plugin by `pytest_configure`; one per pytest process."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.entries: list[ReportEntry] = []
        self._pending: dict[str, list[ReportEntry]] = defaultdict(list)
        self._outcome: dict[str, str] = {}
        self.caught: dict[str, list[str]] = defaultdict(list)
        self.tried: dict[str, list[str]] = defaultdict(list)
        self._selftest_failed = False
        self.caught_dir: str | None = None  # shared by xdist workers: variants caught so far
        if settings.selftest:
            worker = getattr(config, "workerinput", None)
            if worker is not None:
                self.caught_dir = worker.get("meshlog_caught_dir")
            else:
                self.caught_dir = tempfile.mkdtemp(prefix="meshlog-selftest-")
        if config.pluginmanager.hasplugin("xdist") and not _is_xdist_worker(config):
            config.pluginmanager.register(_XdistHooks(self), "meshlog-xdist")

    # -- collection -------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        """Add the catalog's items (`meshlog::test_<scenario>[params]`), or only those
        named on the command line."""
        if not self.settings.enabled:
            return
        from . import catalog

        sources: list[ModuleType] = [catalog]
        if self.settings.random:
            from . import random_catalog

            sources.append(random_catalog)
        selection = self.settings.selection
        added: list[pytest.Item] = []
        for source in sources:
            assert source.__file__ is not None
            module = pytest.Module.from_parent(session, path=Path(source.__file__), nodeid=CATALOG)
            module.obj = source  # the installed module itself, never a second import of it
            for node in session.genitems(module):
                if selection.keeps(node.nodeid):
                    node.add_marker("meshlog_catalog")
                    added.append(node)
        missing = selection.unmatched(n.nodeid for n in added)
        if missing:
            raise pytest.UsageError(
                f"{missing[0]}: no such item in the meshlog catalog "
                "(list them with: pytest --meshlog -m meshlog_catalog --collect-only -q)"
            )
        items.extend(added)

    def selftest_active(self, item: pytest.Item) -> bool:
        return self.variant_of(item) is not None

    @staticmethod
    def variant_of(item: pytest.Item) -> str | None:
        callspec = getattr(item, "callspec", None)
        stack = callspec.params.get("meshlog_stack") if callspec is not None else None
        if isinstance(stack, str) and stack.startswith("reference+"):
            return stack.removeprefix("reference+")
        return None

    # -- per test ---------------------------------------------------------------------------

    def record(self, item: pytest.Item, mesh: Mesh, report: TeardownReport) -> None:
        from .markers import Expectation, marks_of

        expect: Expectation = marks_of(item).expect
        entry = ReportEntry(
            nodeid=item.nodeid,
            outcome="passed",
            stack=mesh.stack,
            seed=mesh.seed,
            procs=len(mesh.scripts),
            teardown_s=mesh.outcome.duration_s if mesh.outcome is not None else 0.0,
            report=report,
            lost_at_most=expect.lost_at_most,
            barrier_expect=expect.barrier,
        )
        self._pending[item.nodeid].append(entry)

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        """The self-test stops at a variant's first catch: later scenarios are skipped."""
        variant = self.variant_of(item)
        if variant is None or self.caught_dir is None:
            return
        marker = Path(self.caught_dir, variant)
        if marker.exists():
            pytest.skip(f"{variant} already caught by {marker.read_text()}")

    def _note_caught(self, variant: str, scenario: str) -> None:
        if self.caught_dir is None:
            return
        marker = Path(self.caught_dir, variant)
        if not marker.exists():
            marker.write_text(scenario)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        variant = self.variant_of(item)
        if variant is None:
            return (yield)
        try:
            return (yield)
        except Exception as exc:  # the scenario's own checks caught the broken stack
            item.stash[_CAUGHT] = (
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            )
            return None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.when != "teardown":
            return report
        entries = self._pending.pop(item.nodeid, [])
        report.meshlog_entries = [e.to_dict() for e in entries]  # type: ignore[attr-defined]
        variant = self.variant_of(item)
        if variant is not None:
            why = item.stash.get(_CAUGHT, None)
            if why is None:
                problems = [p for e in entries for p in e.problems]
                why = problems[0].splitlines()[0] if problems else None
            scenario = item.nodeid.removeprefix(f"{CATALOG}::").replace(f"-{variant}", "")
            report.meshlog_selftest = {  # type: ignore[attr-defined]
                "variant": variant,
                "scenario": scenario,
                "caught": why,
            }
            if why:
                self._note_caught(variant, scenario)
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        outcome = report.outcome if report.when == "call" or report.passed else "error"
        if report.skipped:
            outcome = "skipped"
        previous = self._outcome.get(report.nodeid, "passed")
        if _RANK.get(outcome, 0) > _RANK.get(previous, 0):
            self._outcome[report.nodeid] = outcome
        if report.when != "teardown":
            return
        final = self._outcome.pop(report.nodeid, "passed")
        for data in getattr(report, "meshlog_entries", None) or []:
            self.entries.append(ReportEntry.from_dict({**data, "outcome": final}))
        selftest = getattr(report, "meshlog_selftest", None)
        if selftest and final != "skipped":
            self.tried[selftest["variant"]].append(selftest["scenario"])
            if selftest["caught"]:
                self.caught[selftest["variant"]].append(
                    f"{selftest['scenario']}: {selftest['caught']}"
                )

    # -- end of session ---------------------------------------------------------------------

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if _is_xdist_worker(session.config):
            return
        if self.caught_dir is not None:
            shutil.rmtree(self.caught_dir, ignore_errors=True)
        if self.settings.selftest and self.tried:
            uncaught = sorted(v for v in self.tried if not self.caught.get(v))
            if uncaught:
                self._selftest_failed = True
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.settings.report:
            from .html_report import write_html

            write_html(self.settings.report, self.entries)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if _is_xdist_worker(self.config):
            return
        tr = terminalreporter
        if self.entries and (self.settings.enabled or self.settings.report):
            tr.write_sep("=", "meshlog teardown summary")
            for line in summary_lines(self.entries):
                tr.write_line(line)
        if self.settings.selftest and self.tried:
            tr.write_sep("=", "meshlog self-test: broken stacks and the scenarios that caught them")
            for variant in sorted(self.tried):
                caught = self.caught.get(variant, [])
                tried = len(self.tried[variant])
                status = (
                    f"caught ({len(caught)} of {tried} scenarios run)"
                    if caught
                    else f"NOT CAUGHT by any of {tried} scenarios"
                )
                tr.write_line(f"{variant:32} {status}", red=not caught, green=bool(caught))
                for row in sorted(caught)[:3]:
                    tr.write_line(f"    {row[:160]}")
            if self._selftest_failed:
                tr.write_line(
                    "self-test FAILED: a broken stack went unnoticed by every scenario", red=True
                )
        if self.settings.report and not _is_xdist_worker(self.config):
            tr.write_line(f"meshlog HTML report: {self.settings.report}")


_CAUGHT = pytest.StashKey[str]()


class _XdistHooks:
    """Registered only when pytest-xdist is present (its hooks are unknown otherwise)."""

    def __init__(self, session: MeshlogSession) -> None:
        self.session = session

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["meshlog_caught_dir"] = self.session.caught_dir
        node.workerinput["meshlog_selection"] = self.session.settings.selection.to_dict()


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")
