"""Checking a real mesh's result keeps no object per line (issue 11, finding 8), and judges
exactly as the tuples of lines it replaced did.

Memory itself is measured by benchmarks/bench_check_memory.py, not asserted here: these
tests pin what makes it small (one blob per stream, shared when a destination got exactly
what was emitted; the client's batches read without being split) and that the verdicts
did not change.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fake_procs import Script, script
from pytest_meshlog.backend import ReferenceBackend
from pytest_meshlog.harness import Mesh, MeshHarness
from pytest_meshlog.lines import Lines
from pytest_meshlog.markers import Expectation, MeshOptions
from pytest_meshlog.oracle import evaluate
from pytest_meshlog.report import MeshEvidence, TeardownReport

LINES = 20_000


def run(tmp_path: Path, scripts: list[Script]) -> Mesh:
    harness = MeshHarness(
        backend=ReferenceBackend(),
        options=MeshOptions(env="prod"),  # per-host files are written and checked too
        faults=(),
        expect=Expectation(),
        seed=7,
        procs=len(scripts),
        timeout=120,
        tmp_path=tmp_path,
    )
    mesh = harness.spawn(scripts)
    mesh.wait_scripts(120)
    mesh.stop(60)
    return mesh


def as_tuples(evidence: MeshEvidence) -> MeshEvidence:
    """The same evidence as the tuples of lines the evidence used to hold."""
    ranks = tuple(
        dataclasses.replace(
            r,
            streams=tuple(  # type: ignore[arg-type]
                dataclasses.replace(
                    s,
                    emitted=tuple(s.emitted),
                    delivered=tuple(s.delivered),
                    file_lines=None if s.file_lines is None else tuple(s.file_lines),
                )
                for s in r.streams
            ),
        )
        for r in evidence.ranks
    )
    return dataclasses.replace(evidence, ranks=ranks)


def verdict(report: TeardownReport) -> tuple[object, ...]:
    return (
        report.lost,
        report.duplicates,
        report.order_violations,
        report.unexpected,
        report.findings,
        report.streams,
        report.problems(),
    )


def test_a_clean_stream_is_one_blob_shared_by_every_destination(tmp_path: Path) -> None:
    flood = script(3, flavour="ascii").flood(LINES, 40).line("last").partial("tail")
    mesh = run(tmp_path, [flood, flood])
    report = mesh.report
    assert report is not None
    report.assert_clean()
    for rank in report.evidence.ranks:
        out = rank.streams[0]
        assert isinstance(out.emitted, Lines) and len(out.emitted) == LINES + 2
        assert out.emitted[-1] == b"[%d] tail" % rank.rank and out.ends_with_partial
        # exactly what was emitted, so the client's and the file's lines are not copies
        assert out.delivered is out.emitted
        assert out.file_lines is out.emitted
    # the check read the client's batches as they are: its record was never split into lines
    records = mesh._client.client.records  # type: ignore[attr-defined]
    assert records and all(not record._lines for record in records.values())


def test_a_crashed_rank_is_judged_as_with_tuples_of_lines(tmp_path: Path) -> None:
    """A rank killed mid-flood (its tail lost, allowed) next to a clean one, and a rank
    whose stderr is a mix of short, long and non-UTF-8 lines."""
    crasher = script(5, flavour="ascii").flood(LINES, 40).line("x" * 5000).crash("sigkill")
    mixed = (
        script(6)
        .line("é" * 3000, stream="stderr")
        .flood(500, 30, stream="stderr")
        .partial("end\r", stream="stderr")
    )
    mesh = run(tmp_path, [crasher, mixed])
    report = mesh.report
    assert report is not None
    old = evaluate(as_tuples(report.evidence))
    assert verdict(report) == verdict(old)
    assert report.evidence.ranks[0].crashed
    report.assert_clean()  # a crash may lose its tail; nothing else is lost
