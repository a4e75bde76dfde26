"""`coverage run -m pytest --meshlog` measures every process of a mesh: the driver, the
bootstrap hosts and the fake children (coverage's `[run] patch = subprocess`; the child
runtime saves its data itself before `os._exit`)."""

from __future__ import annotations

import json
import re
import sys

import pytest

from tests.test_plugin import BASE_ARGS, assert_no_leftovers

coverage = pytest.importorskip("coverage")
pytestmark = pytest.mark.timeout(180)

# function -> module: each runs only in a host or a child process (never in the driver)
ONLY_IN_HOSTS_AND_CHILDREN = {
    "pytest_meshlog/stack/child.py": ["run_child", "ChildRuntime.start", "ChildRuntime.finish"],
    "pytest_meshlog/stack/forwarder.py": ["LogForwardActor.start", "LogForwardActor.say_bye"],
    "pytest_meshlog/stack/host_control.py": ["main", "_serve"],
    "pytest_meshlog/stack/bootstrap.py": [
        "BootstrapProcManager.spawn",
        "BootstrapProcManager.stop",
    ],
    "pytest_meshlog/stack/tee.py": ["StreamFwder._forward", "StreamFwder._eof"],
    "fake_procs/executor.py": ["execute", "_Executor.run"],
}


def _version() -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", coverage.__version__)[:2])


@pytest.mark.skipif(
    _version() < (7, 10), reason="needs coverage >= 7.10 ([run] patch = subprocess)"
)
def test_coverage_measures_hosts_and_children(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG", "COVERAGE_FILE"):
        monkeypatch.delenv(var, raising=False)
    data_file = pytester.path / ".coverage"
    pytester.path.joinpath(".coveragerc").write_text(
        "[run]\n"
        "parallel = true\n"
        "source =\n    pytest_meshlog\n    fake_procs\n"
        "patch = subprocess\n"
        f"data_file = {data_file}\n"
    )
    py = sys.executable
    run = pytester.run(
        py, "-m", "coverage", "run", "-m", "pytest", "--meshlog", "-k", "happy_path",
        *BASE_ARGS, timeout=120,
    )  # fmt: skip
    assert run.ret == 0, "\n".join(run.outlines + run.errlines)
    run.stdout.fnmatch_lines(["*meshlog teardown summary*", "*= 2 passed, * deselected in *"])
    assert_no_leftovers(pytester)

    # one data file per process: the driver, one host per mesh, one per child (1 + 2)
    parts = sorted(p.name for p in pytester.path.glob(".coverage.*"))
    assert len(parts) >= 1 + 2 + 3, parts

    combine = pytester.run(py, "-m", "coverage", "combine", timeout=60)
    assert combine.ret == 0, "\n".join(combine.outlines + combine.errlines)
    report = pytester.run(py, "-m", "coverage", "report", timeout=60)
    assert report.ret == 0, "\n".join(report.outlines + report.errlines)
    as_json = pytester.run(py, "-m", "coverage", "json", "-o", "cov.json", timeout=60)
    assert as_json.ret == 0, "\n".join(as_json.outlines + as_json.errlines)

    percent = {}
    for line in report.outlines:
        m = re.match(r"(\S+\.py)\s+\d+\s+\d+\s+(\d+)%$", line.strip())
        if m:
            percent[m.group(1).replace("\\", "/")] = int(m.group(2))
    files = json.loads((pytester.path / "cov.json").read_text())["files"]
    for module, functions in ONLY_IN_HOSTS_AND_CHILDREN.items():
        [path] = [p for p in files if p.replace("\\", "/").endswith(module)]
        [shown] = [pct for p, pct in percent.items() if p.endswith(module)]
        assert shown > 0, f"{module}: 0% in `coverage report`"
        for function in functions:
            covered = files[path]["functions"][function]["summary"]["covered_lines"]
            assert covered > 0, f"{module}: {function} ran in a host or child but shows 0 lines"
    # and the driver's half
    [plugin] = [p for p in files if p.replace("\\", "/").endswith("pytest_meshlog/plugin.py")]
    assert files[plugin]["functions"]["meshlog"]["summary"]["covered_lines"] > 0
