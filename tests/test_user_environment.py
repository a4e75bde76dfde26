"""The plugin in a user's own project: their HYPERACTOR_* environment, their own checks for
leftover processes, and catalog items named on the command line. Real pytest sessions
(pytester); sessions that spawn meshes run in a subprocess."""

from __future__ import annotations

import pytest

from tests.test_plugin import assert_no_leftovers, run_inline, run_sub

pytestmark = pytest.mark.timeout(180)

KNOBS = """
import pytest

def _run(mesh):
    mesh.wait_scripts()
    return mesh.stop()

def test_session_value(meshlog, fake_procs):
    mesh = meshlog.spawn([fake_procs.script().line("x")])
    report = _run(mesh)
    report.assert_clean()
    print("\\nSEEN", mesh.delivered(0), mesh.options.read_log_buffer, bool(report.files))

@pytest.mark.meshlog(prefix_with_rank=True, read_log_buffer=3, force_file_log=False)
def test_marker_wins(meshlog, fake_procs):
    mesh = meshlog.spawn([fake_procs.script().line("x")])
    report = _run(mesh)
    report.assert_clean()
    assert mesh.delivered(0) == [b"[0] x"]
    assert mesh.options.read_log_buffer == 3 and not report.files

def test_spawn_argument_wins(meshlog, fake_procs):
    mesh = meshlog.spawn([fake_procs.script().line("x")], prefix_with_rank=True)
    _run(mesh).assert_clean()
    assert mesh.delivered(0) == [b"[0] x"]
"""


def _seen(result: pytest.RunResult) -> str:
    (line,) = [line for line in result.outlines if line.startswith("SEEN ")]
    return line


def test_hyperactor_environment_applies_under_the_plugin(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYPERACTOR_PREFIX_WITH_RANK", "false")
    monkeypatch.setenv("HYPERACTOR_READ_LOG_BUFFER", "7")
    monkeypatch.setenv("HYPERACTOR_FORCE_FILE_LOG", "true")
    pytester.makepyfile(test_knobs=KNOBS)
    result = run_sub(pytester, "-s")
    result.assert_outcomes(passed=3)
    assert _seen(result) == "SEEN [b'x'] 7 True"  # unprefixed, batch of 7, files in local


def test_option_and_ini_override_the_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYPERACTOR_PREFIX_WITH_RANK", "false")
    monkeypatch.setenv("HYPERACTOR_READ_LOG_BUFFER", "7")
    pytester.makeini("[pytest]\nmeshlog_read_log_buffer = 9\n")
    pytester.makepyfile(test_knobs=KNOBS)
    result = run_sub(pytester, "-s", "-k", "session_value")
    result.assert_outcomes(passed=1)
    assert _seen(result) == "SEEN [b'x'] 9 False"  # the ini key beats the environment
    result = run_sub(
        pytester, "-s", "-k", "session_value", "--meshlog-prefix-with-rank=true",
        "--meshlog-read-log-buffer", "11",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    assert _seen(result) == "SEEN [b'[0] x'] 11 False"  # the option beats ini and environment


def test_without_any_setting_the_defaults_hold(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PREFIX_WITH_RANK", "READ_LOG_BUFFER", "FORCE_FILE_LOG"):
        monkeypatch.delenv(f"HYPERACTOR_{name}", raising=False)
    pytester.makepyfile(test_knobs=KNOBS)
    result = run_sub(pytester, "-s", "-k", "session_value")
    result.assert_outcomes(passed=1)
    assert _seen(result) == "SEEN [b'[0] x'] 100 False"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("HYPERACTOR_READ_LOG_BUFFER", "lots", "'lots' is not an integer"),
        ("HYPERACTOR_READ_LOG_BUFFER", "0", "'0' must be from 1 to 10000"),
        ("HYPERACTOR_READ_LOG_BUFFER", str(2**64), f"'{2**64}' must be from 1 to 10000"),
        ("HYPERACTOR_PREFIX_WITH_RANK", "maybe", "'maybe' is not a boolean"),
        ("HYPERACTOR_FORCE_FILE_LOG", "", "'' is not a boolean"),
    ],
)
def test_a_bad_environment_value_is_a_usage_error_naming_the_variable(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(variable, value)
    result = run_inline(pytester, "--meshlog", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: environment variable {variable}={message}*"])


def test_a_bad_environment_value_does_not_disturb_a_project_without_the_harness(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --meshlog only a test that asks for the `meshlog` fixture is stopped by it."""
    monkeypatch.setenv("HYPERACTOR_READ_LOG_BUFFER", "lots")
    pytester.makepyfile(
        test_mixed="def test_plain():\n    pass\n\ndef test_harness(meshlog):\n    pass\n"
    )
    result = run_inline(pytester)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*HYPERACTOR_READ_LOG_BUFFER='lots' is not an integer*"])


# -- a downstream leak check: nothing the harness started outlives a meshlog test ----------

DOWNSTREAM = """
import psutil

def test_a_meshlog_test(meshlog, fake_procs):
    mesh = meshlog.spawn([fake_procs.partial_line_writer(lines=3)] * 2)
    mesh.wait_scripts()
    mesh.stop().assert_clean()

def test_the_projects_own_leak_check():
    children = psutil.Process().children(recursive=True)
    assert children == [], [" ".join(c.cmdline()) for c in children]
"""


def test_no_process_outlives_a_meshlog_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_downstream=DOWNSTREAM)
    result = run_sub(pytester, "-p", "no:randomly", "--meshlog", "-m", "not meshlog_catalog")
    result.assert_outcomes(passed=2)
    assert_no_leftovers(pytester)


def test_the_warm_spare_host_is_an_opt_in_that_outlives_tests(pytester: pytest.Pytester) -> None:
    """With --meshlog-spare-host a warm host waits between tests, as documented: a check like
    the project's own above sees it (and it ends with the session)."""
    pytester.makepyfile(test_downstream=DOWNSTREAM)
    result = run_sub(pytester, "-p", "no:randomly", "--meshlog-spare-host")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*pytest_meshlog.stack.host --spare*"])
    assert_no_leftovers(pytester)


# -- catalog items named on the command line ------------------------------------------------


def test_a_catalog_item_runs_alone_when_named(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user="def test_user():\n    raise AssertionError('collected')\n")
    result = run_sub(pytester, "--meshlog", "meshlog::test_happy_path[procs=1]", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*meshlog::test_happy_path?procs=1? PASSED*"])


def test_catalog_ids_by_function_and_old_alias_with_a_user_path(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user="def test_user():\n    pass\n")
    result = run_inline(
        pytester, "--meshlog", "--collect-only", "-q", "test_user.py", "meshlog::test_crlf",
        "meshlog/happy_path[procs=2]",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.OK
    ids = [line for line in result.outlines if "::" in line]
    assert ids == [
        "test_user.py::test_user",
        "meshlog::test_happy_path[procs=2]",
        "meshlog::test_crlf[procs=1]",
        "meshlog::test_crlf[procs=2]",
    ]


def test_catalog_items_named_under_xdist(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(test_user="def test_user():\n    raise AssertionError('collected')\n")
    result = run_sub(pytester, "--meshlog", "-n", "2", "meshlog::test_happy_path")
    result.assert_outcomes(passed=2)


def test_an_unknown_catalog_id_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = run_inline(pytester, "--meshlog", "meshlog::test_nosuch[procs=1]")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: meshlog::test_nosuch?procs=1?: no such item in the meshlog catalog*"]
    )


def test_a_real_meshlog_folder_is_the_users_own(pytester: pytest.Pytester) -> None:
    pytester.mkpydir("meshlog")
    pytester.path.joinpath("meshlog", "test_mine.py").write_text("def test_mine():\n    pass\n")
    result = run_inline(pytester, "--collect-only", "-q", "meshlog/test_mine.py::test_mine")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["meshlog/test_mine.py::test_mine"])


RULES = """
import pytest

def test_session_value(meshlog):
    print("\\nRULES", meshlog.options.rules)

@pytest.mark.meshlog(rules="strict")
def test_marker_wins(meshlog):
    assert meshlog.options.rules == "strict"
"""


def _rules(result: pytest.RunResult) -> str:
    (line,) = [line for line in result.outlines if line.startswith("RULES ")]
    return line


def test_rules_level_from_marker_option_and_ini(pytester: pytest.Pytester) -> None:
    """`rules`: the marker wins, then the option, then the ini key, then `literal`."""
    pytester.makepyfile(test_rules=RULES)
    result = run_inline(pytester, "-s")
    result.assert_outcomes(passed=2)
    assert _rules(result) == "RULES literal"
    pytester.makeini("[pytest]\nmeshlog_rules = strict\n")
    result = run_inline(pytester, "-s")
    result.assert_outcomes(passed=2)
    assert _rules(result) == "RULES strict"
    result = run_inline(pytester, "-s", "--meshlog-rules=literal")
    result.assert_outcomes(passed=2)
    assert _rules(result) == "RULES literal"


@pytest.mark.parametrize(
    ("args", "ini", "message"),
    [
        (["--meshlog-rules=lax"], "", "--meshlog-rules='lax' is not one of literal, strict"),
        ([], "meshlog_rules = lax", "ini meshlog_rules='lax' is not one of literal, strict"),
    ],
)
def test_a_bad_rules_level_is_a_usage_error_naming_it(
    pytester: pytest.Pytester, args: list[str], ini: str, message: str
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(test_rules=RULES)
    result = run_inline(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}*"])


def test_a_bad_rules_marker_is_a_collection_error_naming_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_rules="import pytest\n\n@pytest.mark.meshlog(rules='lax')\n"
        "def test_x(meshlog):\n    pass\n"
    )
    result = run_inline(pytester)
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*meshlog marker: rules='lax' is not one of literal, strict*"])
