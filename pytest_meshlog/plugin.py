"""The pytest plugin (entry point `meshlog`): options, markers, hooks, fixtures, catalog.

Without `--meshlog` it is inert except for its fixtures and markers, which work in any
test that asks for them. With `--meshlog` it adds the built-in teardown catalog to the
run and prints a teardown summary; `--meshlog-report` writes an HTML report.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from fake_procs import FakeProcs, default_catalog

from . import hookspecs, kept
from .backend import ReferenceBackend, StackBackend
from .harness import Mesh, MeshHarness
from .leaks import LeakChecker, format_leaks
from .markers import MARKERS, MARKS, MarkerError, TestMarks, marks_of, parse_marks
from .report import TeardownReport
from .selection import Selection, take_catalog_ids
from .session import MeshlogSession
from .settings import SELECTION, SETTINGS, Settings, add_options
from .stack import spare
from .stack.stalls import Stall, watch

SESSION = pytest.StashKey[MeshlogSession]()
HARNESSES = pytest.StashKey[list[MeshHarness]]()
WATCHED_FROM = pytest.StashKey[float]()
"""When the `meshlog` fixture began watching for stalls of this process (monotonic)."""


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> None:
    """Take catalog ids (`meshlog::test_happy_path[procs=1]`) out of the positional
    arguments before pytest resolves them as paths (see `selection`)."""
    positionals = list(getattr(early_config.known_args_namespace, "file_or_dir", None) or [])
    early_config.stash[SELECTION] = take_catalog_ids(
        args, positionals, early_config.invocation_params.dir
    )


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    worker = getattr(config, "workerinput", None)
    if worker is not None and "meshlog_selection" in worker:  # named on the controller
        selection = Selection.from_dict(worker["meshlog_selection"])
    else:
        selection = config.stash.get(SELECTION, Selection())
    settings = Settings.from_config(config, selection=selection)
    config.stash[SETTINGS] = settings
    from .monarch import plugin as monarch_plugin  # answers `monarch`; imports no Monarch

    if not config.pluginmanager.is_registered(monarch_plugin):
        config.pluginmanager.register(monarch_plugin, "meshlog-monarch")
    from .torchrun import plugin as torchrun_plugin  # answers `torchrun`; imports no torch

    if not config.pluginmanager.is_registered(torchrun_plugin):
        config.pluginmanager.register(torchrun_plugin, "meshlog-torchrun")
    from .ray import plugin as ray_plugin  # answers `ray`; imports no Ray

    if not config.pluginmanager.is_registered(ray_plugin):
        config.pluginmanager.register(ray_plugin, "meshlog-ray")
    if settings.stack != "reference":
        make_backend(config, settings.stack)  # an unknown name is a usage error, up front
    session = MeshlogSession(config, settings)
    config.stash[SESSION] = session
    config.pluginmanager.register(session, "meshlog-session")


def pytest_unconfigure(config: pytest.Config) -> None:
    spare.discard()  # the warm host the last mesh left for a next one that will not come


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Only catalog ids were named: collect nothing from the file system."""
    settings = config.stash.get(SETTINGS, None)
    return True if settings is not None and settings.selection.only else None


@pytest.hookimpl(trylast=True)
def pytest_meshlog_make_stack(config: pytest.Config, name: str) -> StackBackend | None:
    spare_host = config.stash[SETTINGS].spare_host
    if name == "reference":
        return ReferenceBackend(spare_host=spare_host)
    if name.startswith("reference+"):
        from .selftest.variants import VARIANTS

        variant = name.removeprefix("reference+")
        if variant not in VARIANTS:
            raise pytest.UsageError(
                f"--meshlog-stack={name!r}: no broken variant {variant!r} of the reference "
                f"stack (variants: {', '.join(sorted(VARIANTS))})"
            )
        return ReferenceBackend(variant, spare_host=spare_host)
    return None


def make_backend(config: pytest.Config, name: str) -> StackBackend:
    backend: StackBackend | None = config.hook.pytest_meshlog_make_stack(config=config, name=name)
    if backend is None:
        raise pytest.UsageError(
            f"--meshlog-stack={name!r}: no plugin provides a stack of that name "
            "(built in: reference; others come from pytest_meshlog_make_stack)"
        )
    return backend


# -- markers: validated while collecting, so a bad one is a collection error ------------------


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Any:
    result = yield
    if result is None:
        return result
    items = result if isinstance(result, list) else [result]
    for item in items:
        if isinstance(item, pytest.Function):
            try:
                item.stash[MARKS] = parse_marks(item.iter_markers())
            except MarkerError as exc:
                raise collector.CollectError(f"{item.nodeid}: {exc}") from None
    return result


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def meshlog_seed(request: pytest.FixtureRequest) -> int:
    """The seed for this test's generated content: --meshlog-seed, else derived from the
    test's id (stable across runs). Override this fixture to pin it per test or module."""
    settings = request.config.stash[SETTINGS]
    if settings.seed is not None:
        return settings.seed
    return zlib.crc32(request.node.nodeid.encode()) & 0x7FFFFFFF


@pytest.fixture
def fake_procs(request: pytest.FixtureRequest, meshlog_seed: int) -> FakeProcs:
    """Builds fake-child scripts (SPEC 3.2); plugins add named ones via a hook."""
    catalog = default_catalog()
    request.config.hook.pytest_meshlog_add_scripts(catalog=catalog)
    return FakeProcs(seed=meshlog_seed, catalog=catalog)


@pytest.fixture
def meshlog_stack(request: pytest.FixtureRequest) -> str:
    """The stack backend's name: --meshlog-stack, or a value parametrised indirectly."""
    param = getattr(request, "param", None)
    return str(param) if param is not None else request.config.stash[SETTINGS].stack


@pytest.fixture
def meshlog_leak_check(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LeakChecker | None]:
    """Fails the test (at teardown) if it leaves processes, driver fds or stack socket /
    temp directories behind that were not there when this fixture was set up. On for every
    `meshlog` test under --meshlog; off with --meshlog-no-leak-check / meshlog_leak_check."""
    if not request.config.stash[SETTINGS].leak_check:
        yield None
        return
    log = tmp_path_factory.getbasetemp() / f"meshlog-private-dirs-{os.getpid()}.jsonl"
    checker = LeakChecker(log)
    checker.start()
    yield checker
    labels: dict[str, str] = {}
    for harness in request.node.stash.get(HARNESSES, []):
        for j, mesh in enumerate(harness.meshes):
            sockdir = getattr(mesh.client, "sockdir", None)
            if sockdir is not None:
                labels[str(sockdir)] = f"mesh {j} (workdir {mesh.workdir})"
    leaks = checker.finish(labels)
    if leaks:
        pytest.fail(format_leaks(request.node.nodeid, leaks), pytrace=False)


@pytest.fixture
def meshlog(
    request: pytest.FixtureRequest,
    meshlog_seed: int,
    meshlog_stack: str,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MeshHarness]:
    """Spawns meshes of fake children; stops, verifies and cleans them up at teardown."""
    config = request.config
    settings = config.stash[SETTINGS]
    if settings.knob_error is not None:
        raise pytest.UsageError(settings.knob_error)
    item = request.node
    marks = marks_of(item)
    backend = make_backend(config, meshlog_stack)
    session = config.stash[SESSION]
    if settings.enabled and settings.leak_check and not session.selftest_active(item):
        request.getfixturevalue("meshlog_leak_check")  # set up first, so checked last

    def on_report(mesh: Mesh, report: TeardownReport) -> None:
        config.hook.pytest_meshlog_teardown_report(item=item, report=report)
        session.record(item, mesh, report)

    options = marks.mesh_options(settings.knobs)
    if session.selftest_active(item):  # some variants are caught only at the strict level
        from .selftest.variants import judged_at

        options = judged_at(options, meshlog_stack)
    harness = MeshHarness(
        backend=backend,
        options=options,
        faults=marks.faults,
        expect=marks.expect,
        seed=meshlog_seed,
        procs=_procs_param(item) or settings.procs,
        timeout=settings.timeout,
        tmp_path=tmp_path,
        on_report=on_report,
        # a broken stack may leave a child waiting for tails that never come: keep it short
        env={"MESHLOG_QUIESCE_TIMEOUT": "2"} if session.selftest_active(item) else None,
        cache_dir=tmp_path_factory.getbasetemp() / "meshlog-cache",
    )
    item.stash.setdefault(WATCHED_FROM, time.monotonic())
    item.stash.setdefault(HARNESSES, []).append(harness)
    unwatch = watch().hold()  # so a failure can say if this process was not run
    try:
        yield harness
        _finish(harness, item, marks, config, tmp_path_factory)
    finally:
        unwatch()


def _finish(
    harness: MeshHarness,
    item: pytest.Item,
    marks: TestMarks,
    config: pytest.Config,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    try:
        reports = harness.finish()
        if config.stash[SESSION].selftest_active(item):
            return  # the self-test records what was caught instead of failing
        for report in reports:
            report.assert_clean(
                lost_at_most=marks.expect.lost_at_most, barrier=marks.expect.barrier
            )
    except Exception:
        kept.keep_failed(harness.meshes, item.name, config, tmp_path_factory)
        raise


def _stalls_text(stalls: list[Stall]) -> str:
    spans = "\n".join(f"  not run for {s.describe()}" for s in stalls)
    return (
        f"{spans}\nWhile this test ran, the process got almost no CPU for "
        f"{sum(s.seconds for s in stalls):.1f} s: the machine stalled, the process was "
        "stopped, or a thread held the GIL while it blocked. A deadline that ran out then "
        "measured that, not only the stack."
    )


def _procs_param(item: pytest.Item) -> int | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("procs") if callspec is not None else None


# -- reporting on failures ----------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    report: pytest.TestReport = yield
    harnesses = item.stash.get(HARNESSES, [])
    if report.failed and harnesses and report.when == "call":
        for harness in harnesses:  # stop now, so the failure shows how the meshes went down
            try:
                harness.finish()
            except Exception as exc:
                report.sections.append(("meshlog: stopping the meshes failed", str(exc)))
    if report.failed and harnesses:
        stalls = watch().between(item.stash[WATCHED_FROM])
        if stalls:
            report.sections.append(("meshlog: this process was not run", _stalls_text(stalls)))
    if report.failed and harnesses and report.when in ("call", "teardown"):
        for _i, harness in enumerate(harnesses):
            for j, mesh in enumerate(harness.meshes):
                title = f"meshlog mesh {j} (seed {mesh.seed}, stack {mesh.stack})"
                if mesh.report is not None:
                    report.sections.append(
                        (f"{title}: teardown timeline", mesh.report.timeline(width=40))
                    )
                if mesh.outcome is not None and mesh.outcome.tails:
                    tails = "\n".join(
                        f"rank {r} {s}: " + " | ".join(lines[-5:])
                        for r, streams in sorted(mesh.outcome.tails.items())
                        for s, lines in streams.items()
                    )
                    report.sections.append((f"{title}: StreamFwder peek tails", tails))
                notes = getattr(mesh.client, "notes", None)  # what a backend could not judge
                if notes:
                    report.sections.append((f"{title}: {mesh.stack} notes", "\n".join(notes)))
                report.sections.append((f"{title}: client stderr (tail)", mesh.output.tail(1)))
                report.sections.append(
                    (f"{title}: evidence on disk", kept.on_disk(mesh.workdir, item.config))
                )
    return report
