"""The self-contained HTML teardown report (`--meshlog-report PATH`, SPEC 3.1).

One file, inline CSS and inline SVG, no script and no external asset, so it can be attached
to a CI run and opened anywhere. It renders from the light form of `ReportEntry` only, so
the xdist controller can write it from what the workers sent as JSON.

This module lays out the page (summary, index, one section per mesh with its problems,
counts and journal); `html_timeline.py` draws each mesh's timeline, `html_parts.py` holds
what both use.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .html_parts import as_int, as_list, as_map, esc, exit_text, legend, ms, num
from .html_timeline import timeline_svg
from .journal_view import fields_text, timed
from .summary import ReportEntry, summary_lines


def write_html(
    path: str | Path,
    entries: Sequence[ReportEntry],
    *,
    title: str = "pytest-meshlog teardown report",
) -> None:
    """Write the report for `entries` (one section per mesh) to `path`."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(entries, title=title), encoding="utf-8", errors="backslashreplace")


def render_html(
    entries: Sequence[ReportEntry], *, title: str = "pytest-meshlog teardown report"
) -> str:
    """The report as one HTML string (what `write_html` writes)."""
    generated = time.strftime("%Y-%m-%d %H:%M:%S")
    tests = len({e.nodeid for e in entries})
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<header><h1>{esc(title)}</h1>",
        f'<p class="meta">{tests:,} test{"s" * (tests != 1)}, {len(entries):,} '
        f"mesh{'es' * (len(entries) != 1)} &middot; generated {esc(generated)}</p></header>",
        f'<pre class="summary">{esc(chr(10).join(summary_lines(entries)))}</pre>',
    ]
    if entries:
        parts.append(_index(entries))
        parts.append(legend())
    parts += [_section(i, e) for i, e in enumerate(entries)]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


_CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg2:#f6f8fa;--red:#cf222e;
--green:#1a7f37;--amber:#9a6700;--blue:#0969da}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:0 0 6px;word-break:break-all}
h3{font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);
margin:18px 0 6px}
.meta{color:var(--muted);margin:0 0 12px}
pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;margin:0;
white-space:pre-wrap;word-break:break-all}
pre.summary{background:var(--bg2);border:1px solid var(--line);border-radius:6px;
padding:12px 14px;margin:12px 0 20px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;width:100%}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--bg2);font-weight:600;font-size:12px;color:var(--muted)}
td.n,th.n{text-align:right}
.bad{color:var(--red);font-weight:600}.warn{color:var(--amber)}.ok{color:var(--green)}
a{color:var(--blue);text-decoration:none}a:hover{text-decoration:underline}
.badge{display:inline-block;min-width:58px;text-align:center;border-radius:10px;
padding:0 8px;font-size:12px;font-weight:600;color:#fff;background:#6e7781;
vertical-align:2px;margin-right:6px}
.badge.passed{background:var(--green)}.badge.failed,.badge.error{background:var(--red)}
.badge.skipped{background:#8c959f}
section.test{border:1px solid var(--line);border-radius:8px;padding:16px 18px;margin:22px 0}
section.test.failed,section.test.error{border-left:4px solid var(--red)}
section.test.passed{border-left:4px solid var(--green)}
ol.problems{margin:0;padding-left:22px}
ol.problems li{margin:0 0 8px}
ol.problems pre{background:#fff5f5;border:1px solid #ffcecb;border-radius:6px;padding:8px}
p.ok{color:var(--green);margin:0}
svg.timeline{width:100%;height:auto;display:block;border:1px solid var(--line);
border-radius:6px;background:#fff}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
details{margin-top:10px}summary{cursor:pointer;color:var(--muted)}
details pre{background:var(--bg2);padding:8px;border-radius:6px;margin-top:6px;
max-height:420px;overflow:auto;white-space:pre}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;margin:8px 0 0;padding:0;list-style:none;
color:var(--muted);font-size:12px}
.legend li{display:flex;align-items:center;gap:5px}
.barriers span{display:inline-block;margin-right:14px}
"""


def _outcome_class(outcome: str) -> str:
    return outcome if outcome in ("passed", "failed", "skipped", "error") else "other"


def _lost_total(entry: ReportEntry) -> tuple[int, int]:
    """(all lost lines, unexplained ones)."""
    lost = entry.numbers.get("lost")
    if not isinstance(lost, Mapping):
        return 0, 0
    return sum(int(v) for v in lost.values()), int(lost.get("unexplained", 0))


def _index(entries: Sequence[ReportEntry]) -> str:
    rows = []
    for i, e in enumerate(entries):
        n = e.numbers
        lost, unexplained = _lost_total(e)
        barriers = as_list(n.get("barriers"))
        done = sum(1 for b in barriers if as_map(b).get("status") == "completed")
        rows.append(
            f'<tr><td><span class="badge {_outcome_class(e.outcome)}">{esc(e.outcome)}</span></td>'
            f'<td><a href="#m{i}">{esc(e.nodeid)}</a></td>'
            f"<td>{esc(e.stack)}</td><td class=n>{num(e.seed)}</td>"
            f"<td class=n>{num(n.get('ranks', e.procs))}</td>"
            f"<td class=n>{num(n.get('lines_emitted'))}</td>"
            f"<td class=n>{num(n.get('lines_delivered'))}</td>"
            f'<td class="n{" bad" if unexplained else ""}">{lost:,}</td>'
            f'<td class="n{" warn" if done < len(barriers) else ""}">{done}/{len(barriers)}</td>'
            f"<td class=n>{ms(e.teardown_s)}</td></tr>"
        )
    head = (
        "<tr><th>outcome</th><th>test</th><th>stack</th><th class=n>seed</th>"
        "<th class=n>procs</th><th class=n>emitted</th><th class=n>delivered</th>"
        "<th class=n>lost</th><th class=n>barriers</th><th class=n>stop()</th></tr>"
    )
    return f"<table class=index><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _section(i: int, e: ReportEntry) -> str:
    cls = _outcome_class(e.outcome)
    seed = "no seed" if e.seed is None else f"seed {e.seed}"
    files = _files_note(e)
    parts = [
        f'<section class="test {cls}" id="m{i}">',
        f'<h2><span class="badge {cls}">{esc(e.outcome)}</span>{esc(e.nodeid)}</h2>',
        f'<p class="meta">{esc(seed)} &middot; stack {esc(e.stack)} &middot; '
        f"{num(e.procs)} procs &middot; stop() took {ms(e.teardown_s)}"
        f"{' &middot; ' + files if files else ''}</p>",
        "<h3>problems</h3>",
    ]
    if e.problems:
        items = "".join(f"<li><pre>{esc(p)}</pre></li>" for p in e.problems)
        parts.append(f'<ol class="problems">{items}</ol>')
    elif e.numbers or e.journal:
        parts.append('<p class="ok">none: the teardown is clean</p>')
    else:
        parts.append('<p class="meta">no teardown report (the mesh never stopped)</p>')
    parts.append("<h3>timeline</h3>")
    parts.append(timeline_svg(e))
    if e.journal_cut:
        parts.append(
            f'<p class="meta">{e.journal_cut:,} of {e.journal_total:,} journal events were '
            "cut (chatty ones first); the timeline shows the rest</p>"
        )
    parts.append("<h3>lines per rank and stream</h3>")
    parts.append(_counts_table(e))
    parts.append(_barriers_line(e))
    parts.append(_journal_details(e))
    parts.append("</section>")
    return "\n".join(parts)


def _files_note(e: ReportEntry) -> str:
    reason = e.numbers.get("files_gate_reason")
    if e.files:
        names = ", ".join(Path(f).name for f in e.files[:6])
        more = f", ... ({len(e.files) - 6} more)" if len(e.files) > 6 else ""
        return f"{len(e.files)} per-proc file{'s' * (len(e.files) != 1)}: {esc(names + more)}"
    if reason:
        return f"no per-proc files ({esc(reason)})"
    return ""


def _counts_table(e: ReportEntry) -> str:
    if not e.streams:
        return '<p class="meta">no streams recorded</p>'
    exits = {r.get("rank"): r for r in e.ranks}
    by_rank: dict[Any, list[Mapping[str, Any]]] = {}
    for row in e.streams:
        by_rank.setdefault(row.get("rank"), []).append(row)
    rows = []
    for rank, streams in by_rank.items():
        info = as_map(exits.get(rank))
        how = exit_text(info)
        for k, s in enumerate(streams):
            cells = []
            if k == 0:
                crashed = ' class="bad"' if info.get("crashed") else ""
                cells.append(
                    f'<td rowspan="{len(streams)}">rank {esc(rank)}</td>'
                    f'<td rowspan="{len(streams)}"{crashed}>{esc(how)}</td>'
                )
            cells.append(f"<td>{esc(s.get('stream'))}</td>")
            cells.append(_count_cells(s))
            rows.append(f"<tr>{''.join(cells)}</tr>")
    head = (
        "<tr><th>rank</th><th>exit</th><th>stream</th><th class=n>emitted</th>"
        "<th class=n>delivered</th><th class=n>in files</th><th class=n>bytes written</th>"
        "<th class=n>console bytes</th><th>lost (where: rule)</th><th>partial line</th>"
        "<th class=n>Flush(None)</th><th>EOF</th></tr>"
    )
    return f"<table class=counts><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _count_cells(s: Mapping[str, Any]) -> str:
    emitted, delivered = as_int(s.get("emitted")), as_int(s.get("delivered"))
    lost = {where: as_map(rules) for where, rules in as_map(s.get("lost")).items()}
    unexplained = any("unexplained" in rules for rules in lost.values())
    written, console = as_int(s.get("emitted_bytes")), as_int(s.get("console_bytes"))
    flushes = as_int(s.get("flush_none_at_eof"))
    partial = s.get("partial_line_forwarded")
    short = emitted is not None and delivered is not None and delivered != emitted
    lost_text = "<br>".join(
        f'<span class="{"bad" if rule == "unexplained" else "warn"}">'
        f"{esc(where)}: {int(n):,} {esc(rule)}</span>"
        for where, rules in lost.items()
        for rule, n in rules.items()
    )

    def td(text: str, bad: bool = False, num: bool = True) -> str:
        cls = " ".join(c for c in ("n" if num else "", "bad" if bad else "") if c)
        return f'<td class="{cls}">{text}</td>' if cls else f"<td>{text}</td>"

    return "".join(
        (
            td(num(emitted)),
            td(num(delivered), short and unexplained),
            td(num(s.get("in_files"))),
            td(num(written)),
            td(num(console), console is not None and console != written),
            td(lost_text or "&ndash;", num=False),
            td(
                {None: "&ndash;", True: "forwarded"}.get(partial, "missing"),
                partial is False,
                False,
            ),
            td(num(flushes), flushes is not None and flushes != 1),
            td("seen" if s.get("eof_seen") else "never", not s.get("eof_seen"), False),
        )
    )


def _barriers_line(e: ReportEntry) -> str:
    barriers = e.numbers.get("barriers")
    if not isinstance(barriers, list) or not barriers:
        return '<p class="meta">barriers: none recorded</p>'
    colour = {"completed": "ok", "superseded": "warn", "timeout": "bad"}
    spans = "".join(
        f"<span><b>v{esc(b.get('version'))}</b> "
        f'<span class="{colour.get(str(b.get("status")), "warn")}">{esc(b.get("status"))}</span>'
        f" after {ms(b.get('latency_s'))}</span>"
        for b in barriers
    )
    return f'<p class="barriers"><b>barriers:</b> {spans}</p>'


def _journal_details(e: ReportEntry) -> str:
    events = timed(e.journal)
    if not events:
        return ""
    t0 = events[0][0]
    rows = []
    for t, ev in events:
        rows.append(
            f"{(t - t0) * 1000:+10.2f} ms  {ev.get('src', '?')!s:<8} {ev.get('ev')} "
            f"{fields_text(ev)}"
        )
    cut = f", {e.journal_cut:,} cut" if e.journal_cut else ""
    return (
        f"<details><summary>journal ({len(events):,} events{cut})</summary>"
        f"<pre>{esc(chr(10).join(r.rstrip() for r in rows))}</pre></details>"
    )
