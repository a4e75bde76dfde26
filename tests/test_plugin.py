"""The pytest plugin as users meet it: real pytest sessions through `pytester`.

Sessions that spawn meshes run in a subprocess (real children; an in-process run would share
the stack's threads with this session). Sessions that only collect, list markers or fail with
a usage error before anything is spawned run in-process, which is much faster.
"""

from __future__ import annotations

import json
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.timeout(180)

# hypothesis's pytest plugin, when installed, costs about a second per session: block it
# (blocking a plugin that is not installed is a no-op).
BASE_ARGS = ("-p", "no:cacheprovider", "-p", "no:benchmark", "-p", "no:hypothesispytest")


def run_sub(pytester: pytest.Pytester, *args: str, timeout: float = 120) -> pytest.RunResult:
    """A real pytest session in a subprocess (for anything that spawns meshes)."""
    return pytester.runpytest_subprocess(*BASE_ARGS, *args, timeout=timeout)


def run_inline(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """An in-process session: only for runs that never spawn a mesh."""
    return pytester.runpytest(*BASE_ARGS, *args)


def leftover_processes(root: Path) -> list[str]:
    """Live processes whose command line mentions `root` (hosts and children do: their
    script and journal paths live in the inner session's tmp dirs under it)."""
    needle = str(root)
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(proc.info["cmdline"] or ())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if needle in cmdline:
            found.append(f"{proc.info['pid']}: {cmdline}")
    return found


def assert_no_leftovers(pytester: pytest.Pytester) -> None:
    deadline = time.monotonic() + 2.0  # reaping by the OS is not instantaneous
    while (left := leftover_processes(pytester.path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, "processes outlived the pytest session:\n" + "\n".join(left)


def stdout_text(result: pytest.RunResult) -> str:
    return "\n".join(result.outlines)


# ------------------------------------------------------------------------------------------
# 1. without --meshlog: inert, but the fixtures work


FIXTURE_USER = """
import pytest

def test_plain():
    assert 1 + 1 == 2

def test_fixtures(meshlog, fake_procs):
    mesh = meshlog.spawn([fake_procs.partial_line_writer(lines=5) for _ in range(2)])
    assert mesh.ranks == [0, 1]
    mesh.wait_scripts()
    report = mesh.stop()
    assert report.lost == () and report.duplicates == () and report.order_violations == ()
    for rank in mesh.ranks:
        out = report.stream(rank, "stdout")
        assert out.emitted == 6, out  # five lines and the final partial line
        assert out.delivered == out.emitted
        assert out.partial_line_forwarded is True
        assert report.stream(rank, "stderr").emitted == 0
    assert report.flush_none_at_eof == {(r, s): 1 for r in (0, 1) for s in ("stdout", "stderr")}
    assert all(b.completed for b in report.barriers)
    summary = report.summary()
    assert summary["ranks"] == 2 and summary["lines_delivered"] == 12
    report.assert_clean()
"""


def test_inert_without_flag_but_fixtures_work(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=FIXTURE_USER)
    result = run_sub(pytester, "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["*test_user.py::test_plain PASSED*", "*test_user.py::test_fixtures PASSED*"]
    )
    assert "meshlog teardown summary" not in stdout_text(result)
    assert "meshlog::" not in stdout_text(result)
    assert_no_leftovers(pytester)


def test_inert_collects_no_catalog(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=FIXTURE_USER)
    result = run_inline(pytester, "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    ids = [line for line in result.outlines if "::" in line or line.startswith("meshlog::")]
    assert ids == ["test_user.py::test_plain", "test_user.py::test_fixtures"]


# ------------------------------------------------------------------------------------------
# 2. --meshlog: the catalog is collected and run, with a summary (and 8: the HTML report)


def test_meshlog_collects_catalog_ids(pytester: pytest.Pytester) -> None:
    result = run_inline(pytester, "--meshlog", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    ids = [line for line in result.outlines if line.startswith("meshlog::")]
    for expected in (
        "meshlog::test_happy_path[procs=1]",
        "meshlog::test_happy_path[procs=2]",
        "meshlog::test_crash_mid_batch[procs=2-sigkill]",
        "meshlog::test_crash_mid_batch[procs=1-exit]",
        "meshlog::test_interleaved_streams[procs=2]",
        "meshlog::test_4k_boundary_multibyte[procs=2-4097]",
    ):
        assert expected in ids, ids
    assert len(ids) == len(set(ids)) >= 40
    assert all(re.fullmatch(r"meshlog::test_\w+(\[[^\]]+\])?", i) for i in ids), ids
    result.stdout.fnmatch_lines([f"{len(ids)} tests collected*"])


def test_meshlog_catalog_selection_by_keyword(pytester: pytest.Pytester) -> None:
    result = run_inline(pytester, "--meshlog", "--collect-only", "-q", "-k", "happy_path")
    ids = [line for line in result.outlines if line.startswith("meshlog::")]
    assert ids == ["meshlog::test_happy_path[procs=1]", "meshlog::test_happy_path[procs=2]"]


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_meshlog_runs_catalog_with_summary_and_html_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        def test_mine(meshlog, fake_procs):
            mesh = meshlog.spawn(fake_procs.interleaver(lines=10))
            mesh.wait_scripts()
        """
    )
    result = run_sub(
        pytester, "-v", "--meshlog", "-k", "happy_path or mine", "--meshlog-report", "out.html"
    )
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "*meshlog::test_happy_path?procs=1? PASSED*",
            "*meshlog::test_happy_path?procs=2? PASSED*",
            "*= meshlog teardown summary =*",
            "scenarios:*3 (3 passed)*",
            "stack:*reference*",
            "lines delivered:*",
            "lost:*none*",
            "meshlog HTML report: out.html",
        ]
    )
    # three meshes with 1, 2 and 2 children (the user test runs on the default procs=2)
    assert re.search(r"^children:\s+5$", stdout_text(result), re.M), stdout_text(result)
    assert stdout_text(result).count("meshlog teardown summary") == 1

    page = (pytester.path / "out.html").read_text(encoding="utf-8")
    parser = _Html()
    parser.feed(page)
    parser.close()
    assert "html" in parser.tags and "body" in parser.tags
    text = "".join(parser.text)
    for nodeid in (
        "meshlog::test_happy_path[procs=1]",
        "meshlog::test_happy_path[procs=2]",
        "test_user.py::test_mine",
    ):
        assert nodeid in text, nodeid
    assert_no_leftovers(pytester)


# ------------------------------------------------------------------------------------------
# 3. markers


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    result = run_inline(pytester, "--markers")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.meshlog: meshlog(procs=*",
            "@pytest.mark.meshlog_fault: meshlog_fault(kind*",
            "@pytest.mark.meshlog_expect: meshlog_expect(lost_at_most*",
        ]
    )


def test_markers_pass_strict_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_marked="""
        import pytest

        @pytest.mark.meshlog(procs=3, env="prod", hosts=1)
        @pytest.mark.meshlog_fault("crash", rank=1, after_lines=2, how="exit")
        @pytest.mark.meshlog_expect(lost_at_most=2, barrier="timeout")
        def test_marked():
            pass
        """
    )
    result = run_inline(pytester, "--strict-markers")
    result.assert_outcomes(passed=1)
    # and strict markers still reject a typo of one of them
    pytester.makepyfile(
        test_marked="""
        import pytest

        @pytest.mark.meshlog_faults("crash")
        def test_marked():
            pass
        """
    )
    result = run_inline(pytester, "--strict-markers")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*'meshlog_faults' not found in `markers`*"])


@pytest.mark.parametrize(
    ("mark", "expected"),
    [
        ("meshlog(bogus=1)", "*meshlog marker: unknown argument 'bogus'*"),
        ("meshlog(procs=0)", "*meshlog marker: procs=0 must be an int from 1 to 1024*"),
        ("meshlog(procs=10**6)", "*meshlog marker: procs=1000000 must be an int from 1 to 1024*"),
        ("meshlog(hosts=5000)", "*meshlog marker: hosts=5000 must be an int from 1 to 1024*"),
        (
            "meshlog(aggregate_window_sec=float('inf'))",
            "*aggregate_window_sec=inf must be None or a finite number > 0*",
        ),
        ("meshlog(env='staging')", "*meshlog marker: env='staging' is not one of*"),
        ("meshlog_fault('nope')", "*meshlog_fault marker: unknown fault kind 'nope'*"),
        ("meshlog_fault('crash', how='gently')", "*crash how='gently'*"),
        ("meshlog_fault('hang', delay=1)", "*hang takes no argument 'delay'*"),
        ("meshlog_expect(barrier='maybe')", "*barrier='maybe' must be 'complete' or 'timeout'*"),
        ("meshlog_expect(lost_at_most=-1)", "*lost_at_most=-1 must be an int >= 0*"),
    ],
    ids=[
        "meshlog-unknown-arg",
        "meshlog-procs-0",
        "meshlog-procs-huge",
        "meshlog-hosts-huge",
        "meshlog-window-inf",
        "meshlog-env",
        "fault-unknown-kind",
        "fault-crash-how",
        "fault-hang-param",
        "expect-barrier",
        "expect-lost",
    ],
)
def test_bad_marker_is_a_collection_error(
    pytester: pytest.Pytester, mark: str, expected: str
) -> None:
    pytester.makepyfile(
        test_bad=f"""
        import pytest

        @pytest.mark.{mark}
        def test_bad(meshlog):
            pass
        """
    )
    result = run_inline(pytester)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ERROR collecting test_bad.py*", expected])


def test_bad_marker_on_a_class_or_module(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad="""
        import pytest

        pytestmark = pytest.mark.meshlog_fault("sigkill_forwarder", rank=-1)

        class TestX:
            def test_x(self):
                pass
        """
    )
    result = run_inline(pytester)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*rank=-1 must be an int >= 0*"])


# ------------------------------------------------------------------------------------------
# 3 (procs/env marker), 4 (crash fault) and 6 (kill is an allowed loss), in one session

MARKED_USER = """
import signal
import pytest

@pytest.mark.meshlog(procs=3, env="prod")
def test_three_children_with_files(meshlog, fake_procs):
    mesh = meshlog.spawn(fake_procs.partial_line_writer(lines=4))
    assert mesh.ranks == [0, 1, 2]
    exits = mesh.wait_scripts()
    assert sorted(exits) == [0, 1, 2]
    report = mesh.stop()
    assert len(report.evidence.ranks) == 3
    assert len(report.files) == 2, report.files  # one host: one file per stream
    assert all(str(mesh.log_dir) in f for f in report.files)
    for rank in mesh.ranks:
        assert report.stream(rank, "stdout").in_files == report.stream(rank, "stdout").emitted == 5
    report.assert_clean()

@pytest.mark.meshlog_fault("crash", rank=0, after_lines=2, how="sigkill")
def test_crash_fault(meshlog, fake_procs):
    mesh = meshlog.spawn([fake_procs.partial_line_writer(lines=6) for _ in range(2)])
    exits = mesh.wait_scripts()
    assert exits[0].signal == signal.SIGKILL, exits
    assert exits[1].code == 0, exits
    report = mesh.stop()
    assert report.stream(0, "stdout").emitted == 2  # two lines, then the crash
    assert report.stream(1, "stdout").emitted == 7
    assert report.unexplained == ()
    for loss in report.lost:
        assert (loss.rank, loss.rule, loss.allowed) == (0, "crash-last-batch", True), loss
    report.assert_clean()

@pytest.mark.meshlog_expect(lost_at_most=0)
def test_killed_mid_flood_is_an_allowed_loss(meshlog, fake_procs):
    import time

    flood = fake_procs.script().flood(20_000_000, 60)  # 1.2 GB: killed long before its end
    mesh = meshlog.spawn([flood, fake_procs.partial_line_writer(lines=3)])
    assert mesh.flush().completed
    deadline = time.monotonic() + 20
    while mesh.progress(0).count(b"w o d ") < 10:  # the flood is under way
        assert time.monotonic() < deadline, "rank 0 wrote no flood block within 20 s"
        time.sleep(0.005)
    mesh.kill(0, signal.SIGKILL)
    exits = mesh.wait_scripts()
    assert exits[0].signal == signal.SIGKILL
    report = mesh.stop()
    assert 0 < report.stream(0, "stdout").emitted < 20_000_000  # killed mid-flood
    assert report.unexplained == ()
    assert all(loss.rank == 0 and loss.rule == "crash-last-batch" for loss in report.lost)
    assert report.stream(1, "stdout").delivered == 4
"""


def test_marker_options_and_faults_in_a_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_marked=MARKED_USER)
    result = run_sub(pytester, "-v")
    result.assert_outcomes(passed=3)
    assert_no_leftovers(pytester)


# ------------------------------------------------------------------------------------------
# 5. a failing test still gets its meshes torn down


FAILING_USER = """
import json, os
import psutil

def test_fails_with_a_live_mesh(meshlog, fake_procs):
    mesh = meshlog.spawn([fake_procs.hanger(), fake_procs.hanger()])
    mesh.flush()
    procs = psutil.Process().children(recursive=True)
    with open(os.environ["MESHLOG_PIDS_FILE"], "w") as f:
        json.dump([[p.pid, p.create_time(), p.cmdline()] for p in procs], f)
    assert False, "the user's test failed"
"""


def _run_failing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> tuple[pytest.RunResult, list[list[object]]]:
    pytester.makepyfile(test_failing=FAILING_USER)
    pids_file = pytester.path / "pids.json"
    monkeypatch.setenv("MESHLOG_PIDS_FILE", str(pids_file))
    result = run_sub(pytester)
    return result, json.loads(pids_file.read_text())


def _alive(pid: int, create_time: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.create_time() == create_time and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_failing_test_leaves_no_process_behind(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    result, spawned = _run_failing(pytester, monkeypatch)
    result.assert_outcomes(failed=1)  # the test failed, and its teardown raised nothing
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*AssertionError: the user's test failed*"])
    # one host and two children ran while the test did (children forked from the host
    # keep its command line; exec'd ones show fake_procs)
    cmdlines = [" ".join(c) for _, _, c in spawned]  # type: ignore[arg-type]
    assert len(cmdlines) == 3, cmdlines
    assert all("pytest_meshlog.stack.host" in c or "fake_procs" in c for c in cmdlines), cmdlines
    alive = [c for pid, t, c in spawned if _alive(pid, t)]  # type: ignore[arg-type]
    assert not alive, f"outlived the session: {alive}"
    after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert after <= before
    assert_no_leftovers(pytester)


def test_failing_test_shows_teardown_timeline(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, _ = _run_failing(pytester, monkeypatch)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*meshlog mesh 0 (seed *, stack reference): teardown timeline*"])


# a stack whose stop() raises for the first of two meshes (any backend's stop can fail, e.g.
# by a timeout): the second mesh must still be torn down before the next test runs
FLAKY_CONFTEST = """
from pytest_meshlog.backend import ReferenceBackend


class Flaky(ReferenceBackend):
    def __init__(self):
        super().__init__()
        self.name = "flaky"
        self.launched = 0

    def launch(self, plan):
        client = super().launch(plan)
        self.launched += 1
        if self.launched == 1:
            def stop(timeout=15.0):
                raise RuntimeError("stop exploded")

            client.stop = stop
        return client


def pytest_meshlog_make_stack(config, name):
    return Flaky() if name == "flaky" else None
"""

FLAKY_USER = """
import psutil


def test_two_meshes(meshlog, fake_procs, tmp_path):
    meshlog.spawn(fake_procs.hanger())
    meshlog.spawn(fake_procs.hanger())
    (tmp_path.parent.parent / "first.txt").write_text(str(tmp_path))


def test_next(tmp_path):
    first = (tmp_path.parent.parent / "first.txt").read_text()
    left = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE and first in " ".join(p.info["cmdline"] or ()):
            left.append(" ".join(p.info["cmdline"]))
    assert not left, left
"""


def test_failing_stop_is_an_error_naming_the_cause(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(FLAKY_CONFTEST)
    pytester.makepyfile(test_flaky=FLAKY_USER)
    result = run_sub(pytester, "--meshlog-stack", "flaky", "-k", "two_meshes")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*RuntimeError: stopping mesh 0 (seed *) failed: stop exploded*"])
    assert_no_leftovers(pytester)  # at the latest when the session ends


def test_failing_stop_still_tears_down_other_meshes(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(FLAKY_CONFTEST)
    pytester.makepyfile(test_flaky=FLAKY_USER)
    result = run_sub(pytester, "--meshlog-stack", "flaky", "-v")
    result.stdout.fnmatch_lines(["*test_flaky.py::test_next PASSED*"])


# ------------------------------------------------------------------------------------------
# 6 and 7: an unclean teardown is reported with its seed; the seed replays the content


PARTIAL_USER = """
def test_partial(meshlog, fake_procs):
    print("SCRIPT", fake_procs.script().line().partial().to_json())
    mesh = meshlog.spawn(fake_procs.partial_line_writer(lines=3, tail="the-tail"))
    mesh.wait_scripts()
"""

# the same first fake_procs call as PARTIAL_USER, without a mesh (so it can run in-process)
SEED_USER = """
def test_seed(fake_procs, meshlog_seed):
    print("SEED", meshlog_seed)
    print("SCRIPT", fake_procs.script().line().partial().to_json())
"""


def _script_json(result: pytest.RunResult) -> str:
    lines = [line for line in result.outlines if "SCRIPT {" in line]
    assert lines, stdout_text(result)
    return lines[0][lines[0].index("SCRIPT {") + len("SCRIPT ") :]


def _evidence_dir(result: pytest.RunResult) -> Path:
    """The folder a failure report names as the mesh's evidence on disk."""
    lines = result.outlines
    heads = [i for i, line in enumerate(lines) if "evidence on disk" in line]
    assert heads, stdout_text(result)
    return Path(lines[heads[0] + 1].strip())


def test_unclean_teardown_fails_with_seed_and_rank(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_partial=PARTIAL_USER, test_seed=SEED_USER)
    broken = run_sub(
        pytester,
        "test_partial.py",
        "--meshlog-stack",
        "reference+partial_line_dropped",
        "--meshlog-seed",
        "1234",
    )
    # the call passed; the meshlog fixture's teardown check fails the test
    broken.assert_outcomes(passed=1, errors=1)
    broken.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_partial*",
            "*meshlog teardown is not clean*(seed 1234; rerun with --meshlog-seed 1234)*",
            "*rank 0 stdout*",
            "*'[[]0] the-tail' (lost)*",
            "*meshlog mesh 0 (seed 1234, stack reference+partial_line_dropped): teardown timeline*",
        ]
    )
    assert "rank 1 stdout" in stdout_text(broken)
    kept = _evidence_dir(broken)
    assert sorted(p.name for p in (kept / "journal").iterdir())[:2] == [
        "driver.jsonl",
        "host0.jsonl",
    ]
    assert (kept / "client.stdout").is_file()
    assert_no_leftovers(pytester)

    # the printed seed replays the content: the same seed builds the same script
    same = run_inline(pytester, "test_seed.py", "--meshlog-seed", "1234", "-s")
    same.assert_outcomes(passed=1)
    assert _script_json(same) == _script_json(broken)


@pytest.mark.parametrize("policy", ["failed", "all"])
def test_a_teardown_failure_keeps_its_evidence_whatever_the_retention_policy(
    pytester: pytest.Pytester, policy: str
) -> None:
    """The check fails at teardown, after the call passed; under the "failed" retention
    policy pytest then removes the test's tmp_path, and with it the journal. The folder the
    report names must still be there after the session, under either policy."""
    pytester.makeini(f"[pytest]\ntmp_path_retention_policy = {policy}\n")
    pytester.makepyfile(test_partial=PARTIAL_USER)
    broken = run_sub(
        pytester, "test_partial.py", "--meshlog-stack", "reference+partial_line_dropped"
    )
    broken.assert_outcomes(passed=1, errors=1)
    kept = _evidence_dir(broken)
    assert (kept / "journal" / "driver.jsonl").is_file(), stdout_text(broken)
    assert (kept / "client.stdout").is_file()
    broken.stdout.fnmatch_lines([f"*kept by pytest*(tmp_path_retention_policy = {policy}, *"])
    assert_no_leftovers(pytester)


def test_seed_option_sets_content(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_seed=SEED_USER)
    one = run_inline(pytester, "--meshlog-seed", "1234", "-s")
    again = run_inline(pytester, "--meshlog-seed", "1234", "-s")
    other = run_inline(pytester, "--meshlog-seed", "99", "-s")
    default = run_inline(pytester, "-s")  # derived from the test id: stable, but not 1234
    one.stdout.fnmatch_lines(["*SEED 1234*"])
    other.stdout.fnmatch_lines(["*SEED 99*"])
    assert _script_json(one) == _script_json(again)
    assert json.loads(_script_json(one))["steps"] != json.loads(_script_json(other))["steps"]
    assert _script_json(default) not in (_script_json(one), _script_json(other))
    assert _script_json(default) == _script_json(run_inline(pytester, "-s"))


# ------------------------------------------------------------------------------------------
# 9. ini options


def test_ini_options_set_procs_and_seed(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmeshlog_procs = 3\nmeshlog_seed = 7\n")
    pytester.makepyfile(
        test_ini="""
        def test_ini(meshlog, fake_procs, meshlog_seed):
            assert meshlog_seed == 7
            mesh = meshlog.spawn(fake_procs.partial_line_writer(lines=2))
            assert mesh.ranks == [0, 1, 2]
            assert mesh.seed == 7
            mesh.wait_scripts()
            assert mesh.stop().seed == 7
        """
    )
    result = run_sub(pytester)
    result.assert_outcomes(passed=1)
    assert_no_leftovers(pytester)

    # the catalog is parametrised over 1 and the default count
    collected = run_inline(pytester, "--meshlog", "--collect-only", "-q", "-k", "happy_path")
    ids = [line for line in collected.outlines if line.startswith("meshlog::")]
    assert ids == ["meshlog::test_happy_path[procs=1]", "meshlog::test_happy_path[procs=3]"]
    # the command line wins over the ini file
    collected = run_inline(
        pytester, "--meshlog", "--meshlog-procs", "4", "--collect-only", "-q", "-k", "happy_path"
    )
    ids = [line for line in collected.outlines if line.startswith("meshlog::")]
    assert ids == ["meshlog::test_happy_path[procs=1]", "meshlog::test_happy_path[procs=4]"]


def test_ini_meshlog_enables_the_catalog(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmeshlog = true\n")
    result = run_inline(pytester, "--collect-only", "-q", "-k", "happy_path")
    ids = [line for line in result.outlines if line.startswith("meshlog::")]
    assert ids == ["meshlog::test_happy_path[procs=1]", "meshlog::test_happy_path[procs=2]"]


@pytest.mark.parametrize(
    ("ini", "expected"),
    [
        ("meshlog_procs = abc", "*meshlog_procs*abc*"),
        ("meshlog_seed = x7", "*meshlog_seed*x7*"),
        ("meshlog_timeout = soon", "*meshlog_timeout*soon*"),
        ("meshlog_procs = 0", "*meshlog-procs*0*"),
        ("meshlog_procs = 100000", "*--meshlog-procs=100000 must be from 1 to 1024*"),
        ("meshlog_timeout = nan", "*--meshlog-timeout=nan must be a finite number of seconds > 0*"),
        ("meshlog_timeout = inf", "*--meshlog-timeout=inf must be a finite number of seconds > 0*"),
    ],
)
def test_bad_ini_value_is_a_usage_error(pytester: pytest.Pytester, ini: str, expected: str) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = run_inline(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR:*" + expected.lstrip("*")])


def test_bad_boolean_ini_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmeshlog = maybe\n")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = run_inline(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR:*meshlog*maybe*"])


def test_bad_command_line_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = run_inline(pytester, "--meshlog-procs", "abc")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--meshlog-procs='abc' is not an integer*"])


# ------------------------------------------------------------------------------------------
# 10. hooks


HOOKS_CONFTEST = """
import json
from pathlib import Path

from fake_procs import script
from pytest_meshlog.backend import ReferenceBackend

HERE = Path(__file__).parent


def my_script(greeting="hello", *, seed):
    return script(seed).line(greeting, tag=False).line("to stderr", stream="stderr").partial("bye")


def pytest_meshlog_add_scripts(catalog):
    catalog.add("my_script", my_script)


class MineBackend(ReferenceBackend):
    def __init__(self):
        super().__init__()
        self.name = "mine"

    def launch(self, plan):
        with open(HERE / "launches.txt", "a") as f:
            f.write(f"{len(plan.scripts)}\\n")
        return super().launch(plan)


def pytest_meshlog_make_stack(config, name):
    if name == "mine":
        return MineBackend()
    return None


def pytest_meshlog_teardown_report(item, report):
    with open(HERE / "reports.jsonl", "a") as f:
        f.write(json.dumps({"nodeid": item.nodeid, **report.summary()}) + "\\n")
"""

HOOKS_USER = """
def test_my_script(meshlog, fake_procs):
    s = fake_procs.my_script(greeting="hi there")
    assert s.name == "my_script"
    mesh = meshlog.spawn(s)
    assert mesh.stack == "mine"
    mesh.wait_scripts()
    report = mesh.stop()
    assert report.stream(0, "stdout").emitted == 2
    assert report.stream(0, "stderr").emitted == 1
    report.assert_clean()

def test_pair_of_meshes(meshlog, fake_procs):
    meshlog.spawn([fake_procs.silent()])
    meshlog.spawn(fake_procs.interleaver(lines=6))
"""


def test_hooks_scripts_stack_and_reports(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(HOOKS_CONFTEST)
    pytester.makepyfile(test_hooks=HOOKS_USER)
    result = run_sub(
        pytester, "--meshlog-stack", "mine", "--meshlog", "-k", "my_script or pair_of or happy_path"
    )
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*meshlog teardown summary*", "stack:*mine*"])

    launches = (pytester.path / "launches.txt").read_text().split()
    assert sorted(launches) == ["1", "1", "2", "2", "2"]  # happy_path x2, my_script, two meshes

    reports = [
        json.loads(line) for line in (pytester.path / "reports.jsonl").read_text().splitlines()
    ]
    by_test: dict[str, list[dict[str, object]]] = {}
    for r in reports:
        by_test.setdefault(str(r["nodeid"]), []).append(r)
    assert sorted(by_test) == [
        "meshlog::test_happy_path[procs=1]",
        "meshlog::test_happy_path[procs=2]",
        "test_hooks.py::test_my_script",
        "test_hooks.py::test_pair_of_meshes",
    ]
    assert [r["ranks"] for r in by_test["test_hooks.py::test_pair_of_meshes"]] == [1, 2]
    mine = by_test["test_hooks.py::test_my_script"][0]
    assert mine["ranks"] == 2 and mine["lines_delivered"] == 6 and mine["lost"] == {}
    assert_no_leftovers(pytester)


def test_add_scripts_hook_without_meshlog_flag(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(HOOKS_CONFTEST)
    pytester.makepyfile(
        test_names="""
        import pytest

        def test_names(fake_procs):
            assert "my_script" in fake_procs.catalog.names()
            assert fake_procs.my_script().name == "my_script"
            with pytest.raises(AttributeError):
                fake_procs.not_a_script()
        """
    )
    run_inline(pytester).assert_outcomes(passed=1)


def test_unknown_stack_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(meshlog):\n    pass\n")
    result = run_inline(pytester, "--meshlog-stack", "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR:*--meshlog-stack='nope'*"])
