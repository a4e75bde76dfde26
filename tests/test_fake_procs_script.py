"""Scripts as data: building, validation errors, JSON round-trips, catalog, content, tags."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import cast

import pytest

from fake_procs import (
    Catalog,
    FakeProcs,
    Script,
    ScriptError,
    default_catalog,
    find_tag,
    find_tags,
    library,
    planned_bytes,
    script,
)
from fake_procs.steps import Crash, Flood, Line, Raw


def every_step() -> Script:
    return (
        script(seed=11, name="all")
        .line("plain")
        .line()
        .partial("tail", stream="stderr", mode="buffered")
        .raw(bytes(range(256)), stream="stderr", tag=True)
        .flush("stderr")
        .flood(5, 60, mode="buffered")
        .interleave(4, line_bytes=30)
        .sleep(0.0)
        .barrier(0.5)
        .flush()
        .close("stdout")
        .line("still here", stream="stderr")
        .crash("abort")
    )


def test_builder_records_steps_in_order() -> None:
    s = script(seed=3).line("text").partial("tail").raw(b"\xff\n", stream="stderr").sleep(0.1)
    s = s.crash("sigkill")
    assert [st.kind for st in s] == ["line", "partial", "raw", "sleep", "crash"]
    assert s.steps[0] == Line(text="text")
    assert s.steps[2] == Raw(data=b"\xff\n", stream="stderr")
    assert s.steps[-1] == Crash(how="sigkill")
    assert s.seed == 3


def test_builder_is_immutable() -> None:
    base = script(seed=1).line("a")
    longer = base.line("b")
    assert len(base) == 1 and len(longer) == 2
    with pytest.raises(AttributeError):
        base._steps = ()


# Each case: how to build the bad script, then text the error message must contain.
BAD: list[tuple[str, Callable[[], object], list[str]]] = [
    ("negative flood", lambda: script().flood(-1), ["step 0 (flood)", "n=-1"]),
    ("bool count", lambda: script().flood(True), ["step 0 (flood)", "n=True"]),
    ("zero line_bytes", lambda: script().interleave(2, line_bytes=0), ["interleave", "0"]),
    ("bad crash", lambda: script().line("x").crash("sigkil"), ["step 1 (crash)", "'sigkil'"]),  # type: ignore[arg-type]
    ("stdin", lambda: script().line("x", stream="stdin"), ["step 0 (line)", "'stdin'"]),  # type: ignore[arg-type]
    ("bad mode", lambda: script().raw(b"x", mode="async"), ["step 0 (raw)", "'async'"]),  # type: ignore[arg-type]
    ("text type", lambda: script().line(42), ["step 0 (line)", "text=42"]),  # type: ignore[arg-type]
    ("data type", lambda: script().raw("str"), ["step 0 (raw)", "data='str'"]),  # type: ignore[arg-type]
    ("newline in line", lambda: script().line("a\nb"), ["step 0 (line)", "newline"]),
    ("surrogate", lambda: script().partial("\ud800"), ["step 0 (partial)", "UTF-8"]),
    ("sleep str", lambda: script().sleep("1"), ["step 0 (sleep)", "seconds='1'"]),  # type: ignore[arg-type]
    ("sleep negative", lambda: script().sleep(-0.5), ["step 0 (sleep)", "-0.5"]),
    ("sleep nan", lambda: script().sleep(math.nan), ["step 0 (sleep)", "nan"]),
    ("exit 256", lambda: script().exit(256), ["step 0 (exit)", "code=256"]),
    ("barrier 0", lambda: script().barrier(0), ["step 0 (barrier)", "timeout=0"]),
    ("flush stdin", lambda: script().flush("stdin"), ["step 0 (flush)", "'stdin'"]),  # type: ignore[arg-type]
    ("close stdin", lambda: script().close("stdin"), ["step 0 (close)", "'stdin'"]),  # type: ignore[arg-type]
    ("tag type", lambda: script().line("a", tag=1), ["step 0 (line)", "tag=1"]),  # type: ignore[arg-type]
    (
        "write after close",
        lambda: script().close("stdout").line("late"),
        ["step 1 (line)", "stream='stdout' was closed at step 0"],
    ),
    (
        "interleave after close",
        lambda: script().close("stderr").interleave(3),
        ["step 1 (interleave)", "'stderr'"],
    ),
    (
        "after crash",
        lambda: script().crash("exit").line("never"),
        ["step 1 (line)", "unreachable", "step 0 (crash)"],
    ),
    ("after hang", lambda: script().hang().sleep(1), ["step 1 (sleep)", "unreachable"]),
    ("unknown kind", lambda: Script.from_dict(_doc({"op": "explode"})), ["step 0 (explode)"]),
    (
        "unknown arg",
        lambda: Script.from_dict(_doc({"op": "line", "text": "a", "colour": "red"})),
        ["step 0 (line)", "colour"],
    ),
    (
        "bad base64",
        lambda: Script.from_dict(_doc({"op": "line"}, {"op": "raw", "b64": "!!"})),
        ["step 1 (raw)", "'!!'"],
    ),
    ("not an object", lambda: Script.from_dict(_doc(["line"])), ["step 0", "['line']"]),
    ("bad format", lambda: Script.from_json('{"format": "v0"}'), ["format='v0'"]),
    ("not json", lambda: Script.from_json("{"), ["not JSON"]),
    ("seed type", lambda: script(seed="7"), ["seed='7'"]),  # type: ignore[arg-type]
    ("crasher lines", lambda: library.crasher(-1), ["crasher", "after_lines=-1"]),
    ("crasher how", lambda: library.crasher(1, "boom"), ["crash", "'boom'"]),  # type: ignore[arg-type]
    ("flooder bytes", lambda: library.flooder(3, 0), ["flooder(line_bytes=0)"]),
    ("drip interval", lambda: library.slow_drip(2, -1), ["slow_drip(interval=-1)"]),
    ("cut negative", lambda: script().line("a").cut_after_lines(-1), ["n=-1"]),
]


def _doc(*steps: object) -> dict[str, object]:
    return {"format": "fake_procs/1", "steps": list(steps)}


@pytest.mark.parametrize(("build", "needles"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_scripts_fail_at_build_time_naming_step_and_value(
    build: Callable[[], object], needles: list[str]
) -> None:
    with pytest.raises(ScriptError) as info:
        build()
    assert isinstance(info.value, ValueError)
    for needle in needles:
        assert needle in str(info.value)


def test_error_carries_index_and_kind() -> None:
    with pytest.raises(ScriptError) as info:
        script().line("a").line("b").flood(-3)
    assert (info.value.index, info.value.kind) == (2, "flood")


def test_direct_constructor_validates_steps() -> None:
    with pytest.raises(ScriptError, match=r"step 1 \(flood\): n=-2"):
        Script([Line(text="ok"), Flood(n=-2)])


def test_json_round_trip_of_every_step_kind() -> None:
    s = every_step()
    text = s.to_json()
    back = Script.from_json(text)
    assert back == s
    assert back.to_json() == text
    assert back.steps[3] == Raw(data=bytes(range(256)), stream="stderr", tag=True)
    assert json.loads(text)["steps"][3]["b64"]  # bytes travel as base64
    assert planned_bytes(back, 4) == planned_bytes(s, 4)


@pytest.mark.parametrize("name", default_catalog().names())
def test_json_round_trip_of_ready_made_scripts(name: str) -> None:
    s = FakeProcs(seed=5).make(name)
    assert Script.from_json(s.to_json()) == s
    assert s.name == name


def test_write_and_child_argv(tmp_path: object) -> None:
    import pathlib

    path = pathlib.Path(str(tmp_path)) / "s.json"
    s = every_step()
    s.write(path)
    assert Script.from_json(path.read_text(encoding="utf-8")) == s
    argv = Script.child_argv(path, python="py")
    assert argv == ["py", "-m", "fake_procs", str(path)]


def test_generated_content_is_seeded() -> None:
    a = script(seed=42).line().partial().flood(3)
    assert a == script(seed=42).line().partial().flood(3)
    b = script(seed=43).line().partial().flood(3)
    assert a.steps[0] != b.steps[0] and a.corpus != b.corpus
    assert isinstance(a.steps[0], Line) and a.steps[0].tag and a.steps[0].text
    # Two generated lines in one script differ: content depends on the step's position.
    two = script(seed=42).line().line()
    assert two.steps[0] != two.steps[1]


def test_explicit_text_is_untagged_unless_asked() -> None:
    s = script().line("mine").line("tagged", tag=True).line(tag=False)
    out = planned_bytes(s, 0)["stdout"].split(b"\n")
    assert out[0] == b"mine"
    assert out[1] == b"<r0o0> tagged"
    assert find_tag(out[2]) is None


def test_fake_procs_seeds_each_call_reproducibly() -> None:
    one, two = FakeProcs(seed=9), FakeProcs(seed=9)
    first = [one.crasher(2), one.crasher(2), one.flooder(10, 50)]
    assert first == [two.crasher(2), two.crasher(2), two.flooder(10, 50)]
    assert first[0] != first[1]  # same recipe, different content
    assert FakeProcs(seed=10).crasher(2) != FakeProcs(seed=9).crasher(2)


def test_fake_procs_has_every_ready_made_script() -> None:
    fp = FakeProcs(seed=1)
    built = [
        fp.crasher(2, how="sigsegv"),
        fp.partial_line_writer(2, "the tail"),
        fp.interleaver(6),
        fp.flooder(10, 40),
        fp.long_liner(5000),
        fp.binary_writer(4),
        fp.slow_drip(3, 0.01),
        fp.silent(),
        fp.hanger(),
        fp.script().line("x"),
    ]
    assert [s.steps[-1].kind if s.steps else None for s in built] == [
        "crash", "partial", "interleave", "flood", "line", "raw", "sleep", None, "hang", "line",
    ]  # fmt: skip
    assert planned_bytes(built[1], 0)["stdout"].endswith(b"\nthe tail")
    assert planned_bytes(built[7], 0) == {"stdout": b"", "stderr": b""}


def test_catalog_add_and_use() -> None:
    catalog = default_catalog()

    def shouter(times: int = 2, *, seed: int) -> Script:
        s = script(seed)
        for _ in range(times):
            s = s.line("HEY", stream="stderr")
        return s

    catalog.add("shouter", shouter)
    assert "shouter" in catalog and "crasher" in catalog
    fp = FakeProcs(seed=1, catalog=catalog)
    built = fp.make("shouter", 3)
    assert built.name == "shouter"
    assert planned_bytes(built, 0)["stderr"] == b"HEY\n" * 3
    assert planned_bytes(fp.shouter(1), 0)["stderr"] == b"HEY\n"
    with pytest.raises(ValueError, match="already registered"):
        catalog.add("shouter", shouter)
    catalog.add("shouter", library.silent, replace=True)
    with pytest.raises(KeyError, match=r"known: .*crasher"):
        catalog.get("nope")
    with pytest.raises(AttributeError):
        _ = fp.nope
    with pytest.raises(ValueError, match="identifier"):
        catalog.add("not a name", shouter)
    catalog.add("broken", cast(Callable[..., Script], lambda *, seed: "text"))
    with pytest.raises(TypeError, match="not Script"):
        fp.make("broken")
    assert len(Catalog()) == 0


def test_tags_identify_rank_stream_and_sequence() -> None:
    s = script(seed=2).line().line(stream="stderr").flood(3, 50).interleave(4)
    out = planned_bytes(s, 17)
    out_tags = [find_tag(line) for line in out["stdout"].splitlines()]
    err_tags = [find_tag(line) for line in out["stderr"].splitlines()]
    assert [(t.rank, t.stream, t.seq) for t in out_tags if t] == [
        (17, "stdout", i) for i in range(6)
    ]
    assert [(t.rank, t.stream, t.seq) for t in err_tags if t] == [
        (17, "stderr", i) for i in range(3)
    ]
    # The tag is at the start, so it survives the prefix, truncation and aggregation rows.
    line = out["stdout"].splitlines()[2]
    assert len(line) == 50
    assert find_tag(b"[17] " + line[:12] + b"... [TRUNCATED]") == out_tags[2]
    assert find_tag("[3 similar log lines] " + line.decode()) == out_tags[2]
    # A partial line joined with the next line holds two tags, in order.
    joined = planned_bytes(script(1).partial().line(), 0)["stdout"]
    assert [t.seq for t in find_tags(joined)] == [0, 1]


def test_long_liner_has_exact_size_and_wide_characters() -> None:
    s = FakeProcs(seed=4).long_liner(9000)
    first = planned_bytes(s, 123)["stdout"].split(b"\n")[0]
    assert len(first) == 9000
    text = first.decode("utf-8")  # valid UTF-8 throughout
    widths = {len(ch.encode()) for ch in text}
    assert {1, 2, 3, 4} <= widths


def test_binary_writer_writes_hostile_bytes() -> None:
    out = planned_bytes(FakeProcs(seed=8).binary_writer(30), 0)["stdout"]
    with pytest.raises(UnicodeDecodeError):
        out.decode("utf-8")
    assert b"\r\n" in out
    assert len(find_tags(out)) == 30


def test_steps_count_the_lines_they_write() -> None:
    s = (
        script(seed=2)
        .line("a")
        .partial("b")
        .raw(b"x\ny\nz")
        .flood(7)
        .interleave(5)
        .sleep(0.0)
        .flush()
        .barrier(0.5)
    )
    assert [step.line_count() for step in s] == [1, 0, 2, 7, 5, 0, 0, 0]
    assert s.line_count() == 15


def test_a_script_names_the_step_it_ends_in() -> None:
    assert script().line("a").end is None
    assert script().end is None
    assert script().line("a").exit(3).end == script().exit(3).steps[0]
    assert isinstance(script().crash("abort").end, Crash)
    assert script().hang().end is not None  # nothing can follow a hang either


def test_cut_after_lines_keeps_the_steps_that_write_the_first_n_lines() -> None:
    s = script(seed=4, name="cut").line("a").flood(5).sleep(0.0).line("b").exit(0)
    assert s.cut_after_lines(0).steps == ()
    assert [step.kind for step in s.cut_after_lines(1)] == ["line"]
    assert [step.kind for step in s.cut_after_lines(2)] == ["line", "flood"]  # within the flood
    assert [step.kind for step in s.cut_after_lines(6)] == ["line", "flood"]
    assert [step.kind for step in s.cut_after_lines(7)] == ["line", "flood", "sleep", "line"]
    assert s.cut_after_lines(99).end is None  # the end goes: another can follow
    cut = s.cut_after_lines(3).crash("sigkill")
    assert (cut.seed, cut.name, cut.flavour) == (s.seed, s.name, s.flavour)


def test_cut_after_lines_keeps_a_given_corpus() -> None:
    """The lines a cut script writes are the lines the whole script would have written."""
    s = Script(seed=9, corpus=["own words", "more own words"]).flood(4)
    assert s.cut_after_lines(2).corpus == ("own words", "more own words")
