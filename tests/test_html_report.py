"""The HTML report: well-formed, self-contained, escaped, one timeline per mesh, and rendered
the same from the JSON light form as from a live report (the xdist controller's case)."""

from __future__ import annotations

import dataclasses
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pytest_meshlog.html_report import render_html, write_html
from pytest_meshlog.oracle import evaluate
from pytest_meshlog.summary import ReportEntry
from tests.test_oracle import journal, lines, mesh, out, rank_ev
from tests.test_summary import clean_report, entries

_VOID = {"meta", "br", "hr", "img", "input", "link", "col", "wbr", "area", "base", "source"}


class _Checker(HTMLParser):
    """Fails on a close tag that does not match the open one; records tags and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href")]
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href")]

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-8:])
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Checker:
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.stack == ["html"] or checker.stack == [], checker.stack
    return checker


def without_timestamp(page: str) -> str:
    return re.sub(r"generated [0-9: -]+", "generated -", page)


def test_write_html_is_well_formed_and_self_contained(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "report.html"
    meshes = entries()
    write_html(path, meshes)
    page = path.read_text(encoding="utf-8")
    doc = parse(page)
    assert doc.tags.count("section") == len(meshes)
    assert page.count('<svg class="timeline"') == len(meshes)
    assert "script" not in doc.tags and "link" not in doc.tags and "img" not in doc.tags
    assert all(url.startswith("#") for url in doc.urls), doc.urls
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "@import" not in page and "url(" not in page
    text = "".join(doc.text)
    assert "pytest-meshlog teardown report" in text
    assert "0.41 s meshlog::test_crash_mid_batch[procs=3]" in text  # the summary block


def test_every_line_and_event_is_escaped() -> None:
    lossy = entries()[0]
    hostile = {
        "t": 100.26,
        "src": "host0",
        "ev": "sender_failed",
        "rank": 2,
        "stream": "stderr",
        "error": "</svg></title><script>alert(1)</script>\x00\x07\udc80\"'&",
    }
    data = lossy.to_dict()
    data["journal"] = [*data["journal"], hostile]
    page = render_html([ReportEntry.from_dict(data)], title='<b>report</b> & "co"')
    doc = parse(page)
    assert "script" not in doc.tags and "<b>report" not in page
    assert "<script>" not in page and "</script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page  # the lost child line
    assert "&lt;/svg&gt;&lt;/title&gt;&lt;script&gt;alert(1)" in page  # the journal field
    assert "\x00" not in page and "\x07" not in page and "\\x00" in page
    assert "&lt;b&gt;report&lt;/b&gt; &amp; &quot;co&quot;" in page
    page.encode("utf-8")  # no lone surrogate survived


def test_timeline_shows_eof_barriers_stop_and_losses() -> None:
    page = render_html(entries()[:1])
    start = page.index('<svg class="timeline"')
    svg = page[start : page.index("</svg>", start)]
    for lane in ("driver", "host0", "rank0", "rank1", "rank2"):
        assert f">{lane}" in svg
    assert "rank1 \u2715" in svg  # the crashed rank's lane is marked
    for r in (0, 1, 2):
        assert f"host0: eof rank={r} stream=stdout" in svg
        assert f"host0: flush_none_posted rank={r} stream=stderr" in svg
        assert f"host0: child_exited rank={r}" in svg
    assert "barrier v1: started at" in svg and "completed after" in svg
    assert "barrier v2: started at" in svg and "timeout after 2000.0 ms; missing ranks [1]" in svg
    assert "host0: send_skipped rank=2 stream=stdout" in svg
    assert "driver: forwarder_lost rank=1" in svg
    assert ">stop()<" in svg and ">stopped<" in svg
    assert "rank 1 stdout: 3 lines lost (client: 3 crash-last-batch)" in svg
    assert "rank 2 stdout: 1 lines lost (client: 1 unexplained)" in svg
    assert "<title>" in svg and "ms since" not in svg  # axis labels, not prose, inside


def test_counts_table_and_problems() -> None:
    page = render_html(entries()[:1])
    text = "".join(parse(page).text)
    assert "signal 9, crashed" in text
    assert "client: 3 crash-last-batch" in text and "client: 1 unexplained" in text
    assert "barrier v2 timed out after 2.00 s" in text
    assert "seed 4242" in text and "stack reference" in text and "3 procs" in text


def test_meshes_without_journal_or_report_still_render() -> None:
    no_journal = ReportEntry(
        "t/empty", "passed", "reference", 7, 1, 0.01, evaluate(mesh(rank_ev(0), journal=()))
    )
    assert no_journal.journal == [] and no_journal.numbers
    never_stopped = ReportEntry("t/never", "error", "reference", None, 2, 0.0)
    page = render_html([no_journal, never_stopped])
    doc = parse(page)
    assert page.count('<svg class="timeline"') == 2
    assert page.count("no journal events were recorded") == 2
    assert "no teardown report" in "".join(doc.text)
    assert doc.tags.count("section") == 2
    assert render_html([]).count("<section") == 0


def test_controller_renders_the_same_page_from_json() -> None:
    meshes = entries()
    wire = [json.loads(json.dumps(e.to_dict())) for e in meshes]
    again = [ReportEntry.from_dict(d) for d in wire]
    assert without_timestamp(render_html(again)) == without_timestamp(render_html(meshes))


def test_cut_journal_is_announced() -> None:
    base = clean_report(5)
    chatty = tuple(
        {"t": 99.0 + i * 1e-4, "src": "driver", "ev": "barrier_acked", "version": 1, "rank": 0}
        for i in range(2_500)
    )
    report = dataclasses.replace(base, journal=(*chatty, *base.journal))
    entry = ReportEntry("t/chatty", "passed", "reference", 1, 2, 0.2, report)
    page = render_html([entry])
    parse(page)
    assert f"{entry.journal_cut:,} of {entry.journal_total:,} journal events were cut" in page
    assert f"journal (2,000 events, {entry.journal_cut:,} cut)" in page


@pytest.mark.parametrize("title", ["plain", ""])
def test_title_is_used(tmp_path: Path, title: str) -> None:
    write_html(str(tmp_path / "r.html"), entries()[1:2], title=title)
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert f"<title>{title}</title>" in page


def test_long_quiet_stretch_is_cut_not_squashed() -> None:
    events = [
        {"t": 10.0, "src": "host0", "ev": "child_spawned", "rank": 0, "pid": 1},
        {"t": 10.001, "src": "driver", "ev": "stop_begin"},
        {"t": 12.0, "src": "host0", "ev": "eof", "rank": 0, "stream": "stdout", "bytes": 0},
        {"t": 12.002, "src": "driver", "ev": "stop_end"},
    ]
    entry = ReportEntry("t/gap", "passed", "reference", 1, 1, 2.0, journal=events)
    svg = render_html([entry])
    assert "1.999 s without journal events (not to scale)" in svg
    stops = re.findall(
        r'<line x1="([0-9.]+)" y1="24" x2="[0-9.]+" y2="[0-9.]+" stroke="#24292f"', svg
    )
    assert len(stops) == 2 and float(stops[1]) - float(stops[0]) > 400  # not squashed together


def test_both_reports_blame_the_same_event_for_a_loss() -> None:
    """The text report centres its timeline on the event it blames (marked `>`), the HTML
    report flags the loss at it: for one loss both name the same event, here the kill of
    a child that also exited (the kill explains the loss better than the exit)."""
    emitted = lines(1, 10)
    ranks = (rank_ev(0), rank_ev(1, out(1, emitted, emitted[:5] + emitted[6:])))
    events = list(journal(ranks))
    exit_at = next(
        i for i, ev in enumerate(events) if ev["ev"] == "child_exited" and ev["rank"] == 1
    )
    kill = {"t": events[exit_at]["t"] - 0.0005, "src": "driver", "ev": "child_killed", "rank": 1}
    events.insert(exit_at, kill)
    report = evaluate(mesh(*ranks, journal=tuple(events)))
    with pytest.raises(AssertionError) as info:
        report.assert_clean()
    marked = [row for row in str(info.value).splitlines() if row.startswith("  > ")]
    assert len(marked) == 1 and " child_killed rank=1" in marked[0], marked
    page = render_html([ReportEntry("t/kill", "failed", "reference", 1, 2, 0.1, report)])
    [flag] = re.findall(r"rank 1 stdout: 1 lines lost \([^)]*\); blamed on ([^<]*)<", page)
    assert "driver: child_killed rank=1" in flag, flag
