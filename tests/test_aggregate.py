"""Aggregation rules of the LogClientActor (SPEC 1.7), checked against a plain reference."""

from __future__ import annotations

import random
from typing import Any

import pytest
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from pytest_meshlog.stack import aggregate
from pytest_meshlog.stack.aggregate import Aggregator

BASE = "abcdefghijklmnopqrst"  # 20 characters: one edit is a distance of 0.05


def edited(text: str, positions: list[int], char: str = "#") -> str:
    """`text` with the characters at `positions` substituted (one edit each)."""
    chars = list(text)
    for pos in positions:
        chars[pos] = char
    return "".join(chars)


def reference_groups(lines: list[str], threshold: float = 0.15) -> list[tuple[int, str]]:
    """The rule as written in the spec: a scan of every group, no shortcuts."""
    heads: list[str] = []
    counts: list[int] = []
    for line in lines:
        best: int | None = None
        best_dist = threshold
        for i, head in enumerate(heads):
            longest = max(len(line), len(head))
            dist = Levenshtein.distance(line, head) / longest if longest else 0.0
            if dist < best_dist:  # strict: the earliest of equal distances stays
                best, best_dist = i, dist
        if best is None:
            heads.append(line)
            counts.append(1)
        else:
            counts[best] += 1
    return list(zip(counts, heads, strict=True))


def test_identical_lines_form_one_group() -> None:
    agg = Aggregator()
    agg.add_many(["hello world"] * 5)
    assert agg.groups == [(5, "hello world")]
    assert agg.line_count == 5


def test_distance_just_below_threshold_joins() -> None:
    agg = Aggregator()
    agg.add(BASE)
    agg.add(edited(BASE, [3, 9]))  # 2/20 = 0.10
    agg.add(BASE + "x")  # 1/21
    assert agg.groups == [(3, BASE)]


def test_distance_at_threshold_starts_new_group() -> None:
    """The rule is strictly below 0.15: 3 edits in 20 characters is exactly 0.15."""
    agg = Aggregator()
    agg.add(BASE)
    far = edited(BASE, [0, 5, 10])
    assert Levenshtein.normalized_distance(BASE, far) == pytest.approx(0.15)
    agg.add(far)
    assert agg.groups == [(1, BASE), (1, far)]


def test_distance_above_threshold_starts_new_group() -> None:
    agg = Aggregator()
    agg.add_many(["connection reset by peer", "disk quota exceeded on /tmp"])
    assert [count for count, _ in agg.groups] == [1, 1]


def test_distance_is_to_the_first_line_of_a_group() -> None:
    """Lines drifting one edit at a time do not drag a group along."""
    step1 = edited(BASE, [0, 1])  # 0.10 from BASE: joins
    step2 = edited(BASE, [0, 1, 2, 3])  # 0.10 from step1 but 0.20 from BASE: new group
    agg = Aggregator()
    agg.add_many([BASE, step1, step2])
    assert agg.groups == [(2, BASE), (1, step2)]


def test_closest_group_wins() -> None:
    first = edited(BASE, [0, 1, 2])
    second = edited(BASE, [17, 18, 19])  # 0.30 from `first`: its own group
    line = edited(BASE, [17, 18])  # 0.25 from first, 0.05 from second: both under 0.3
    near_both = edited(BASE, [0, 1, 2, 18])  # 0.05 from first, 0.25 from second
    agg = Aggregator(threshold=0.3)
    agg.add_many([first, second, line, near_both])
    assert agg.groups == [(2, first), (2, second)]


def test_closest_group_wins_even_when_both_are_under_threshold() -> None:
    first = edited(BASE, [0, 1, 2])
    second = edited(BASE, [0, 1, 2, 10, 11, 12])  # 0.15 from first: separate group
    line = edited(BASE, [0, 1, 2, 10, 11])  # 0.10 from first, 0.05 from second
    agg = Aggregator()
    agg.add_many([first, second, line])
    assert agg.groups == [(1, first), (2, second)]


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_tie_goes_to_the_earliest_group(order: tuple[int, int]) -> None:
    heads = [edited(BASE, [0, 1]), edited(BASE, [18, 19])]  # 0.20 apart: two groups
    first, second = heads[order[0]], heads[order[1]]
    agg = Aggregator()
    agg.add_many([first, second, BASE])  # BASE is 0.10 from each
    assert agg.groups == [(2, first), (1, second)]


def test_block_format_exactly() -> None:
    agg = Aggregator()
    agg.add_many(["alpha beta gamma 1", "alpha beta gamma 2", "something else entirely"])
    assert agg.render() == (
        ">>> Aggregated Logs (start) >>>\n"
        "[2 similar log lines] alpha beta gamma 1\n"
        "[1 similar log lines] something else entirely\n"
        "<<< Aggregated Logs (end) <<<\n"
    )


def test_render_does_not_reset_take_does() -> None:
    agg = Aggregator()
    agg.add("one line")
    assert agg.render() == agg.render()
    assert agg and agg.line_count == 1
    block = agg.take()
    assert block.startswith(">>> Aggregated Logs (start) >>>\n")
    assert not agg
    assert agg.groups == [] and agg.line_count == 0
    assert agg.take() == ""
    agg.add("fresh")  # groups from before the reset are gone
    assert agg.groups == [(1, "fresh")]


def test_empty_render() -> None:
    agg = Aggregator()
    assert agg.render() == ""
    assert agg.take() == ""
    assert not agg


def test_empty_lines_group_together() -> None:
    agg = Aggregator()
    agg.add_many(["", "", "x"])
    assert agg.groups == [(2, ""), (1, "x")]


def test_non_ascii_lines() -> None:
    """Distance counts characters, not UTF-8 bytes, and rows print the text unchanged."""
    cyr = "ошибка соединения с узлом 17"  # noqa: RUF001
    cjk = "日本語のログ行です番号一二三四五六七八九十"  # 20 characters, 60 bytes
    emoji = "🔥🔥 step finished 🚀 in 12 ms"
    agg = Aggregator()
    agg.add_many([cyr, cyr[:-1] + "8", cjk, cjk[:-1] + "零", emoji, emoji.replace("🚀", "🐢")])
    assert agg.groups == [(2, cyr), (2, cjk), (2, emoji)]
    assert f"[2 similar log lines] {cjk}\n" in agg.render()


def test_threshold_zero_never_groups() -> None:
    agg = Aggregator(threshold=0.0)
    agg.add_many(["same"] * 3)
    assert agg.groups == [(1, "same")] * 3


def test_bad_threshold() -> None:
    with pytest.raises(ValueError, match="threshold"):
        Aggregator(threshold=1.5)


def _mutations(rng: random.Random, count: int) -> list[str]:
    """Lines from a few templates with 0-5 random edits: many near-threshold distances."""
    alphabet = "abcdeé日 0123456789"
    templates = ["".join(rng.choices(alphabet, k=rng.randint(12, 40))) for _ in range(60)]
    lines = []
    for _ in range(count):
        chars = list(rng.choice(templates))
        for _ in range(rng.randint(0, 5)):
            op = rng.randrange(3)
            pos = rng.randrange(len(chars) + 1)
            if op == 0:
                chars.insert(pos, rng.choice(alphabet))
            elif chars and op == 1:
                del chars[min(pos, len(chars) - 1)]
            elif chars:
                chars[min(pos, len(chars) - 1)] = rng.choice(alphabet)
        lines.append("".join(chars))
    return lines


def _ties(rng: random.Random) -> list[str]:
    """Clusters of heads pairwise >= 0.15 apart with lines equally close to several of them.

    Unrelated filler lines come first so that later payloads take the batch path.
    """
    lines = ["".join(rng.choices("wxyz", k=40)) for _ in range(20)]
    for _ in range(8):
        base = "".join(rng.choices("abcdefghij", k=40))
        heads = [edited(base, [i, i + 1, i + 2, i + 3], "Z") for i in range(0, 40, 4)]
        cluster = [base] * 3 + heads + [edited(base, [i], "Z") for i in range(40)]
        rng.shuffle(cluster)
        lines += cluster
    return lines


@pytest.mark.parametrize("seed", range(12))
def test_matches_reference(seed: int) -> None:
    """add(), add_many() (batch path, several payload sizes) and the spec rule agree."""
    rng = random.Random(seed)
    lines = _mutations(rng, 600) if seed % 3 else _ties(rng)
    expected = reference_groups(lines)

    one_by_one = Aggregator()
    for line in lines:
        one_by_one.add(line)
    assert one_by_one.groups == expected

    for payload in (1, 9, 100, 1000):
        batched = Aggregator()
        for start in range(0, len(lines), payload):
            batched.add_many(iter(lines[start : start + payload]))
        assert batched.groups == expected, f"payload={payload}"
        assert batched.line_count == len(lines)


def test_batch_path_without_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _mutations(random.Random(99), 300)
    monkeypatch.setattr(aggregate, "np", None)
    agg = Aggregator()
    agg.add_many(lines)
    assert agg.groups == reference_groups(lines)


def test_batch_path_is_used_for_big_payloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guard the fast path: a big payload over many groups goes through cdist once."""
    calls: list[int] = []
    real = process.cdist

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(process, "cdist", counting)
    lines = _mutations(random.Random(5), 400)
    agg = Aggregator()
    agg.add_many(lines[:200])  # no groups yet at the start: the per-line path
    assert not calls and len(agg.groups) >= 16
    agg.add_many(lines[200:])
    assert len(calls) == 1
    assert agg.groups == reference_groups(lines)
