"""Running the catalog on a foreign backend and comparing its outcomes with a recording
(tests/<backend>_expected.json): shared by the Monarch and torchrun backend tests."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest


def outcomes(junit: Path) -> dict[str, str]:
    """nodeid -> passed | failed | skipped (call or teardown failing makes it failed)."""
    out: dict[str, str] = {}
    for case in ET.parse(junit).iter("testcase"):
        nodeid = f"{case.attrib['classname']}::{case.attrib['name']}"
        tags = {child.tag for child in case}
        verdict = (
            "failed"
            if tags & {"failure", "error"}
            else "skipped"
            if "skipped" in tags
            else "passed"
        )
        if out.get(nodeid) != "failed":
            out[nodeid] = verdict
    return dict(sorted(out.items()))


def run_and_compare(
    pytester: pytest.Pytester, stack: str, expected: Path, *args: str, timeout: float = 540
) -> None:
    """Run `pytest --meshlog --meshlog-stack=<stack>` in a subprocess and fail with a diff
    when a scenario's outcome is not the recorded one (`flaky` matches either)."""
    recorded = json.loads(expected.read_text())
    junit = pytester.path / f"{stack}.xml"
    try:
        pytester.runpytest_subprocess(
            "--meshlog", f"--meshlog-stack={stack}", "-p", "no:cacheprovider", "-p", "no:benchmark",
            f"--junitxml={junit}", "-q", *args, timeout=timeout,
        )  # fmt: skip
        finished = True
    except pytester.TimeoutExpired:
        finished = False
    if not finished:  # pytester keeps the killed run's output in its folder: how far it got
        printed = (pytester.path / "stdout").read_text(errors="replace").strip()
        done = sum(map(len, re.findall(r"^[.sFExX]+", printed, re.M)))
        pytest.fail(
            f"the {stack} catalog did not finish within {timeout:.0f} s; it had printed "
            f"{done} item outcomes:\n{printed[-2000:]}",
            pytrace=False,
        )
    got = outcomes(junit)
    want: dict[str, str] = recorded["outcomes"]
    diff = [
        f"{nodeid}: recorded {want.get(nodeid, '(absent)')}, now {got.get(nodeid, '(absent)')}"
        for nodeid in sorted(set(got) | set(want))
        if want.get(nodeid) != "flaky" and want.get(nodeid) != got.get(nodeid)
    ]
    assert not diff, (
        f"the {stack} catalog's outcomes changed (the runtime, the oracle or the catalog "
        f"did); if the change is right, record it in tests/{expected.name}:\n"
        + "\n".join(diff)
        + "\nnow: "
        + json.dumps(got, indent=1)
    )
