"""Attributing the lines of a per-host file to ranks, on real files."""

from __future__ import annotations

from pathlib import Path

from pytest_meshlog.evidence import file_lines_by_rank


def _host_file(tmp_path: Path, *lines: bytes) -> list[str]:
    path = tmp_path / "mesh_host0_abcd.stdout"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return [str(path)]


def test_identical_untagged_lines_of_two_ranks_keep_each_rank_in_order(tmp_path: Path) -> None:
    """Rank 1's copy of a shared line reaches the host file before rank 0's: each copy
    goes to the rank whose sequence it continues, so neither looks out of order."""
    expected = {(0, "stdout"): (b"a", b"same", b"b"), (1, "stdout"): (b"same", b"c")}
    files = _host_file(tmp_path, b"same", b"a", b"same", b"b", b"c")
    got = file_lines_by_rank(files, expected, prefix_with_rank=False)  # type: ignore[arg-type]
    assert got[(0, "stdout")] == [b"a", b"same", b"b"]
    assert got[(1, "stdout")] == [b"same", b"c"]


def test_equally_owed_copies_go_to_the_rank_whose_next_line_comes_first(tmp_path: Path) -> None:
    """Found by `--meshlog-random 2000 --meshlog-seed 43` (random[170], prefix off): ranks 0
    and 3 both begin with an empty line, and rank 3's copy reached the file first. Both ranks
    were owed the first copy equally; giving it to the lower rank made rank 3's own copy
    land after its next lines, a reordering that never happened. The copy goes to the rank
    whose next line comes first in the file."""
    expected = {
        (0, "stdout"): (b"", b"<r0o0> zero"),
        (3, "stdout"): (b"", b"<r3o0> a", b"<r3o1> b"),
    }
    for order in (
        (b"", b"<r3o0> a", b"<r3o1> b", b"", b"<r0o0> zero"),  # rank 3 first (the failure)
        (b"", b"<r0o0> zero", b"", b"<r3o0> a", b"<r3o1> b"),  # rank 0 first
        (b"", b"", b"<r3o0> a", b"<r0o0> zero", b"<r3o1> b"),  # both copies before either
    ):
        got = file_lines_by_rank(_host_file(tmp_path, *order), expected, prefix_with_rank=False)  # type: ignore[arg-type]
        assert got[(0, "stdout")] == [b"", b"<r0o0> zero"], order
        assert got[(3, "stdout")] == [b"", b"<r3o0> a", b"<r3o1> b"], order


def test_a_surplus_copy_shows_as_a_duplicate_and_a_stranger_goes_to_rank_0(
    tmp_path: Path,
) -> None:
    expected = {(0, "stdout"): (b"x",), (1, "stdout"): (b"y", b"same")}
    files = _host_file(tmp_path, b"y", b"same", b"same", b"nobody", b"x")
    got = file_lines_by_rank(files, expected, prefix_with_rank=False)  # type: ignore[arg-type]
    assert got[(1, "stdout")] == [b"y", b"same", b"same"]
    assert got[(0, "stdout")] == [b"nobody", b"x"]


def test_one_evidence_model_where_the_evidence_is_gathered() -> None:
    """The types live in evidence_model (gathered by evidence, judged by oracle) and stay
    importable from report, as the same objects; gathering never imports the report."""
    from pytest_meshlog import evidence, evidence_model, oracle, report
    from tests.test_architecture import GRAPH

    for name in ("BarrierResult", "StreamEvidence", "RankEvidence", "MeshEvidence", "Stream"):
        assert getattr(report, name) is getattr(evidence_model, name), name
    assert evidence.StreamEvidence is oracle.StreamEvidence is evidence_model.StreamEvidence
    assert "pytest_meshlog.report" not in GRAPH["pytest_meshlog.evidence"]
    assert "pytest_meshlog.evidence_model" in GRAPH["pytest_meshlog.oracle"]
    assert all(m.startswith("pytest_meshlog.stack") for m in GRAPH["pytest_meshlog.evidence_model"])
