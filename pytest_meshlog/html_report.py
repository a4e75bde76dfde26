"""The self-contained HTML teardown report (`--meshlog-report PATH`, SPEC 3.1).

One file, inline CSS and inline SVG, no script and no external asset, so it can be attached
to a CI run and opened anywhere. It renders from the light form of `ReportEntry` only, so
the xdist controller can write it from what the workers sent as JSON.

The timeline has one lane per process (driver, host0.., rank0..); host and driver events
about one rank (EOF, Flush(None), exit, acks) sit on that rank's lane, stdout above the
midline and stderr below it, so each child's teardown reads left to right on one row.
"""

from __future__ import annotations

import html
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from .journal_view import Event, blame, fields_text, lane_of, timed
from .summary import ReportEntry, duration_text, summary_lines

# --------------------------------------------------------------------------- page


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
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<header><h1>{_esc(title)}</h1>",
        f'<p class="meta">{tests:,} test{"s" * (tests != 1)}, {len(entries):,} '
        f"mesh{'es' * (len(entries) != 1)} &middot; generated {_esc(generated)}</p></header>",
        f'<pre class="summary">{_esc(chr(10).join(summary_lines(entries)))}</pre>',
    ]
    if entries:
        parts.append(_index(entries))
        parts.append(_legend())
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


def _esc(value: Any) -> str:
    """HTML-escape anything, with control characters shown as escapes: journal fields and
    problem text can carry whatever bytes a child wrote."""
    text = value if isinstance(value, str) else str(value)
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates
    return html.escape(text, quote=True)


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")


def _outcome_class(outcome: str) -> str:
    return outcome if outcome in ("passed", "failed", "skipped", "error") else "other"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _num(value: Any) -> str:
    n = _int(value)
    return "&ndash;" if n is None else f"{n:,}"


def _ms(seconds: Any) -> str:
    return duration_text(seconds) if isinstance(seconds, (int, float)) else "?"


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
        barriers = _list(n.get("barriers"))
        done = sum(1 for b in barriers if _map(b).get("status") == "completed")
        rows.append(
            f'<tr><td><span class="badge {_outcome_class(e.outcome)}">{_esc(e.outcome)}</span></td>'
            f'<td><a href="#m{i}">{_esc(e.nodeid)}</a></td>'
            f"<td>{_esc(e.stack)}</td><td class=n>{_num(e.seed)}</td>"
            f"<td class=n>{_num(n.get('ranks', e.procs))}</td>"
            f"<td class=n>{_num(n.get('lines_emitted'))}</td>"
            f"<td class=n>{_num(n.get('lines_delivered'))}</td>"
            f'<td class="n{" bad" if unexplained else ""}">{lost:,}</td>'
            f'<td class="n{" warn" if done < len(barriers) else ""}">{done}/{len(barriers)}</td>'
            f"<td class=n>{_ms(e.teardown_s)}</td></tr>"
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
        f'<h2><span class="badge {cls}">{_esc(e.outcome)}</span>{_esc(e.nodeid)}</h2>',
        f'<p class="meta">{_esc(seed)} &middot; stack {_esc(e.stack)} &middot; '
        f"{_num(e.procs)} procs &middot; stop() took {_ms(e.teardown_s)}"
        f"{' &middot; ' + files if files else ''}</p>",
        "<h3>problems</h3>",
    ]
    if e.problems:
        items = "".join(f"<li><pre>{_esc(p)}</pre></li>" for p in e.problems)
        parts.append(f'<ol class="problems">{items}</ol>')
    elif e.numbers or e.journal:
        parts.append('<p class="ok">none: the teardown is clean</p>')
    else:
        parts.append('<p class="meta">no teardown report (the mesh never stopped)</p>')
    parts.append("<h3>timeline</h3>")
    parts.append(_timeline_svg(e))
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
        return f"{len(e.files)} per-proc file{'s' * (len(e.files) != 1)}: {_esc(names + more)}"
    if reason:
        return f"no per-proc files ({_esc(reason)})"
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
        info = _map(exits.get(rank))
        how = _exit_text(info)
        for k, s in enumerate(streams):
            cells = []
            if k == 0:
                crashed = ' class="bad"' if info.get("crashed") else ""
                cells.append(
                    f'<td rowspan="{len(streams)}">rank {_esc(rank)}</td>'
                    f'<td rowspan="{len(streams)}"{crashed}>{_esc(how)}</td>'
                )
            cells.append(f"<td>{_esc(s.get('stream'))}</td>")
            cells.append(_count_cells(s))
            rows.append(f"<tr>{''.join(cells)}</tr>")
    head = (
        "<tr><th>rank</th><th>exit</th><th>stream</th><th class=n>emitted</th>"
        "<th class=n>delivered</th><th class=n>in files</th><th class=n>bytes written</th>"
        "<th class=n>console bytes</th><th>lost (where: rule)</th><th>partial line</th>"
        "<th class=n>Flush(None)</th><th>EOF</th></tr>"
    )
    return f"<table class=counts><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _exit_text(info: Mapping[str, Any]) -> str:
    if not info:
        return "?"
    if info.get("exit_signal"):
        text = f"signal {info['exit_signal']}"
    elif info.get("exit_code") is not None:
        text = f"exit {info['exit_code']}"
    else:
        text = "no exit status"
    return text + (", crashed" if info.get("crashed") else "")


def _count_cells(s: Mapping[str, Any]) -> str:
    emitted, delivered = _int(s.get("emitted")), _int(s.get("delivered"))
    lost = {where: _map(rules) for where, rules in _map(s.get("lost")).items()}
    unexplained = any("unexplained" in rules for rules in lost.values())
    written, console = _int(s.get("emitted_bytes")), _int(s.get("console_bytes"))
    flushes = _int(s.get("flush_none_at_eof"))
    partial = s.get("partial_line_forwarded")
    short = emitted is not None and delivered is not None and delivered != emitted
    lost_text = "<br>".join(
        f'<span class="{"bad" if rule == "unexplained" else "warn"}">'
        f"{_esc(where)}: {int(n):,} {_esc(rule)}</span>"
        for where, rules in lost.items()
        for rule, n in rules.items()
    )

    def td(text: str, bad: bool = False, num: bool = True) -> str:
        cls = " ".join(c for c in ("n" if num else "", "bad" if bad else "") if c)
        return f'<td class="{cls}">{text}</td>' if cls else f"<td>{text}</td>"

    return "".join(
        (
            td(_num(emitted)),
            td(_num(delivered), short and unexplained),
            td(_num(s.get("in_files"))),
            td(_num(written)),
            td(_num(console), console is not None and console != written),
            td(lost_text or "&ndash;", num=False),
            td(
                {None: "&ndash;", True: "forwarded"}.get(partial, "missing"),
                partial is False,
                False,
            ),
            td(_num(flushes), flushes is not None and flushes != 1),
            td("seen" if s.get("eof_seen") else "never", not s.get("eof_seen"), False),
        )
    )


def _barriers_line(e: ReportEntry) -> str:
    barriers = e.numbers.get("barriers")
    if not isinstance(barriers, list) or not barriers:
        return '<p class="meta">barriers: none recorded</p>'
    colour = {"completed": "ok", "superseded": "warn", "timeout": "bad"}
    spans = "".join(
        f"<span><b>v{_esc(b.get('version'))}</b> "
        f'<span class="{colour.get(str(b.get("status")), "warn")}">{_esc(b.get("status"))}</span>'
        f" after {_ms(b.get('latency_s'))}</span>"
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
        f"<pre>{_esc(chr(10).join(r.rstrip() for r in rows))}</pre></details>"
    )


# --------------------------------------------------------------------------- timeline


_WIDTH = 1000
_LEFT = 92  # lane labels
_RIGHT = 24
_TOP = 24  # time axis
_BOTTOM = 20  # stop labels
_LANE = 26
_STREAM_DY = {"stdout": -5.0, "stderr": 5.0}

_RED, _GREEN, _AMBER, _BLUE = "#cf222e", "#1a7f37", "#bf8700", "#0969da"
_GREY, _DARK, _PURPLE, _TEAL = "#8c959f", "#24292f", "#8250df", "#1b7c83"
_BAR = {"completed": _GREEN, "superseded": _AMBER, "timeout": _RED, "open": _RED}

_BAD_EVENTS = frozenset(
    {
        "forwarder_lost",
        "child_killed",
        "barrier_timeout",
        "barrier_stale",
        "barrier_no_open",
        "barrier_unexpected_ack",
        "file_write_error",
        "file_post_after_close",
        "sender_failed",
        "forwarder_failed",
        "tails_missing",
        "quiesce_incomplete",
        "senders_missing",
        "channel_closed",
    }
)
_DRAWN_OTHERWISE = frozenset(
    {"barrier_started", "barrier_completed", "barrier_superseded", "stop_begin", "stop_end"}
)
_HIDDEN = frozenset({"console_bytes"})  # same moment and number as `eof`
_NAMED = frozenset(
    {
        "child_spawned",
        "eof",
        "partial_forwarded",
        "flush_none_posted",
        "child_exited",
        "send_skipped",
        "abort",
        *_BAD_EVENTS,
    }
)
_DODGE = 6.0  # px between named markers of one lane row


def _marker(kind: str, x: float, y: float, ev: Mapping[str, Any] | None = None) -> str:
    """The shape for one event kind, centred on (x, y)."""
    if kind == "child_spawned":
        return (
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="#fff" stroke="{_GREY}" '
            'stroke-width="1.5"/>'
        )
    if kind == "eof":
        return f'<rect x="{x - 1.5:.1f}" y="{y - 6:.1f}" width="3" height="12" fill="{_BLUE}"/>'
    if kind == "partial_forwarded":
        return _poly(((x, y - 5), (x + 5, y), (x, y + 5), (x - 5, y)), _PURPLE)
    if kind == "flush_none_posted":
        return _poly(((x - 2, y - 5), (x + 5, y), (x - 2, y + 5)), _TEAL)
    if kind == "barrier_acked":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{_GREEN}"/>'
    if kind == "child_exited":
        failing = bool(ev and (ev.get("signal") or ev.get("code")))
        colour = _RED if failing else _DARK
        return f'<rect x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7" fill="{colour}"/>'
    if kind == "send_skipped":
        return _poly(((x - 5, y - 5), (x + 5, y - 5), (x, y + 4)), _RED)
    if kind == "abort":  # amber when stop had to drain bytes still in the pipe (SPEC 1.11)
        colour = _AMBER if ev and ev.get("drained_bytes") else _GREY
        return f'<rect x="{x - 1:.1f}" y="{y - 7:.1f}" width="2" height="14" fill="{colour}"/>'
    if kind in _BAD_EVENTS:
        d = 4.0
        return (
            f'<path d="M{x - d:.1f},{y - d:.1f}L{x + d:.1f},{y + d:.1f}'
            f'M{x - d:.1f},{y + d:.1f}L{x + d:.1f},{y - d:.1f}" '
            f'stroke="{_RED}" stroke-width="2.2"/>'
        )
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.2" fill="{_GREY}"/>'


def _poly(points: Iterable[tuple[float, float]], fill: str) -> str:
    pts = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
    return f'<polygon points="{pts}" fill="{fill}"/>'


_LEGEND: tuple[tuple[str, str], ...] = (
    ("child_spawned", "spawned"),
    ("eof", "EOF on the pipe"),
    ("partial_forwarded", "final partial line forwarded"),
    ("flush_none_posted", "Flush(None) posted"),
    ("barrier_acked", "barrier acked"),
    ("child_exited", "child exited (red: signal or non-zero)"),
    ("abort", "abort (amber: drained bytes)"),
    ("send_skipped", "send skipped"),
    ("forwarder_lost", "forwarder lost, killed, timeout, error"),
    ("other", "other event"),
)


def _legend() -> str:
    """One legend for every timeline, built from the same shapes the lanes use."""

    def swatch(inner: str, w: int = 16) -> str:
        return f'<svg width="{w}" height="14" viewBox="0 0 {w} 14" aria-hidden="true">{inner}</svg>'

    items = [f"<li>{swatch(_marker(k, 8, 7))}{_esc(text)}</li>" for k, text in _LEGEND]
    for status, text in (("completed", "barrier completed"), ("superseded", "superseded"),
                         ("timeout", "timed out / never answered")):  # fmt: skip
        bar = f'<rect x="0" y="4" width="26" height="6" rx="2" fill="{_BAR[status]}"/>'
        items.append(f"<li>{swatch(bar, 26)}{_esc(text)}</li>")
    stop = f'<line x1="4" y1="0" x2="4" y2="14" stroke="{_DARK}" stroke-dasharray="3,2"/>'
    items.append(f"<li>{swatch(stop, 8)}stop() began / ended</li>")
    loss = _poly(((2, 2), (12, 2), (7, 10)), _RED)
    items.append(f"<li>{swatch(loss)}lines lost (amber: allowed by a rule)</li>")
    return (
        '<h3>timeline legend</h3><ul class="legend">' + "".join(items) + "</ul>"
        '<p class="meta">x: ms since the first journal event; stdout events sit above a rank '
        "lane's midline, stderr below; hover a mark for the event.</p>"
    )


_GAP_PX = 30.0  # width of one elided stretch of time
_MAX_GAPS = 6


@dataclass
class _Scale:
    """Time to x, linear except across long quiet stretches, which are cut to `_GAP_PX`.

    A teardown is a few busy milliseconds, often after seconds of workload or before a
    barrier deadline; a plain linear axis would squash the part a person came to see.
    """

    t0: float
    gaps: list[tuple[float, float]]  # (start, end) of each elided stretch, in order
    px_per_s: float

    @classmethod
    def fit(cls, times: Sequence[float]) -> _Scale:
        t0, t1 = times[0], times[-1]
        distinct = sorted(set(times))
        spaces = sorted(pairwise(distinct), key=lambda g: g[0] - g[1])  # longest first
        gaps: list[tuple[float, float]] = []
        busy = t1 - t0
        for a, b in spaces[:_MAX_GAPS]:
            # Cut a quiet stretch only while it is a large part of both the whole and of
            # what is left, so a steady trickle of events keeps a plain linear axis.
            if b - a < max(0.002, 0.1 * (t1 - t0), 0.25 * busy):
                break
            gaps.append((a, b))
            busy -= b - a
        gaps.sort()
        room = _WIDTH - _LEFT - _RIGHT - _GAP_PX * len(gaps)
        return cls(t0, gaps, room / max(busy, 1e-3))

    def x(self, t: float) -> float:
        x = _LEFT + (t - self.t0) * self.px_per_s
        for a, b in self.gaps:
            if t <= a:
                break
            cut = min(t, b) - a
            x += _GAP_PX * cut / (b - a) - cut * self.px_per_s
        return x

    def segments(self, end: float) -> list[tuple[float, float]]:
        """The stretches drawn to scale, between the gaps."""
        out, start = [], self.t0
        for a, b in self.gaps:
            out.append((start, a))
            start = b
        out.append((start, end))
        return out


def _lane_order(name: str) -> tuple[int, int, str]:
    m = re.fullmatch(r"(driver|host|rank)(\d*)", name)
    if not m:
        return (3, 0, name)
    return ({"driver": 0, "host": 1, "rank": 2}[m[1]], int(m[2] or -1), "")


def _tick_step(busy_ms: float) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about eight ticks."""
    raw = max(busy_ms / 8, 1e-6)
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _tick_label(ms: float) -> str:
    return f"{ms:,.4g} ms" if ms < 1000 else f"{ms / 1000:,.4g} s"


def _timeline_svg(e: ReportEntry) -> str:
    events = timed(e.journal)
    lanes = sorted(
        {lane_of(ev) for _, ev in events}
        | {f"rank{r}" for r in (_int(s.get("rank")) for s in e.streams) if r is not None},
        key=_lane_order,
    )
    if not events:
        h = 44
        return (
            f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {h}" '
            f'role="img"><text x="{_WIDTH / 2}" y="{h / 2 + 4}" text-anchor="middle" '
            f'fill="{_GREY}" font-size="13">no journal events were recorded</text></svg>'
        )
    t0 = events[0][0]
    scale = _Scale.fit([t for t, _ in events])
    y_of = {lane: _TOP + (k + 0.5) * _LANE for k, lane in enumerate(lanes)}
    bottom = _TOP + len(lanes) * _LANE
    height = bottom + _BOTTOM
    out = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {height}" '
        f'role="img" aria-label="teardown timeline">'
    ]
    out += _lanes_and_axis(lanes, scale, events[-1][0], bottom, e)
    out += _barrier_bars(events, scale, y_of.get("driver"), bottom)
    out += _gap_marks(scale, bottom)
    out += _stop_lines(events, scale, bottom)
    last_x: dict[tuple[str, float], float] = {}
    for t, ev in events:
        kind = str(ev.get("ev"))
        if kind in _DRAWN_OTHERWISE or kind in _HIDDEN:
            continue
        lane = lane_of(ev)
        y = y_of[lane] + _STREAM_DY.get(str(ev.get("stream")), 0.0)
        x = scale.x(t)
        if kind in _NAMED:
            # EOF, tail, Flush(None) and exit often fall in the same few microseconds; nudge
            # each a few pixels right of the last so all stay visible (the tooltip has the time).
            nudged = max(x, last_x.get((lane, y), -math.inf) + _DODGE)
            x = nudged if nudged - x <= 3 * _DODGE else x
            last_x[(lane, y)] = x
        out.append(
            f"<g><title>{_esc(_event_title(t, t0, ev))}</title>{_marker(kind, x, y, ev)}</g>"
        )
    out += _loss_marks(e, events, scale, y_of)
    out.append("</svg>")
    return "".join(out)


def _event_title(t: float, t0: float, ev: Mapping[str, Any]) -> str:
    return f"+{(t - t0) * 1000:.2f} ms  {ev.get('src', '?')}: {ev.get('ev')} {fields_text(ev)}".rstrip()


def _lanes_and_axis(
    lanes: Sequence[str], scale: _Scale, end: float, bottom: float, e: ReportEntry
) -> list[str]:
    crashed = {f"rank{r.get('rank')}": _exit_text(r) for r in e.ranks if r.get("crashed")}
    out = []
    for k, lane in enumerate(lanes):
        top = _TOP + k * _LANE
        if k % 2 == 0:
            out.append(f'<rect x="0" y="{top}" width="{_WIDTH}" height="{_LANE}" fill="#f6f8fa"/>')
        colour = _RED if lane in crashed else _DARK
        note = f"<title>{_esc(lane)}: {_esc(crashed[lane])}</title>" if lane in crashed else ""
        label = lane + (" \u2715" if lane in crashed else "")
        out.append(
            f'<text x="10" y="{top + _LANE / 2 + 4}" font-size="12" fill="{colour}">'
            f"{note}{_esc(label)}</text>"
        )
    segments = scale.segments(end)
    step = _tick_step(sum(b - a for a, b in segments) * 1000)
    last_label = -math.inf
    for a, b in segments:
        lo, hi = (a - scale.t0) * 1000, (b - scale.t0) * 1000
        ticks = [k * step for k in range(math.ceil(lo / step), math.floor(hi / step) + 1)]
        for tick in ticks or [lo]:  # a burst too short for a round tick gets its start
            x = scale.x(scale.t0 + tick / 1000)
            out.append(
                f'<line x1="{x:.1f}" y1="{_TOP - 4}" x2="{x:.1f}" y2="{bottom}" '
                'stroke="#d8dee4" stroke-width="1"/>'
            )
            if x - last_label >= 56:
                out.append(
                    f'<text x="{x:.1f}" y="{_TOP - 8}" font-size="10" fill="{_GREY}" '
                    f'text-anchor="middle">{_esc(_tick_label(tick))}</text>'
                )
                last_label = x
    out.append(f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{bottom}" stroke="{_GREY}"/>')
    return out


def _barrier_bars(
    events: Sequence[tuple[float, Mapping[str, Any]]],
    scale: _Scale,
    lane_y: float | None,
    bottom: float,
) -> list[str]:
    """Each barrier as a translucent band across all lanes (what happened while it was open)
    and a solid bar on the driver lane, coloured by how it ended."""
    started: dict[Any, tuple[float, Mapping[str, Any]]] = {}
    ended: dict[Any, tuple[float, str, Mapping[str, Any]]] = {}
    for t, ev in events:
        kind, version = ev.get("ev"), ev.get("version")
        if kind == "barrier_started":
            started.setdefault(version, (t, ev))
        elif kind in ("barrier_completed", "barrier_superseded", "barrier_timeout"):
            ended.setdefault(version, (t, str(kind).removeprefix("barrier_"), ev))
    last = events[-1][0]
    y = lane_y if lane_y is not None else _TOP + _LANE / 2
    out = []
    for version, (t1, ev) in started.items():
        t2, status, end_ev = ended.get(version, (last, "open", {}))
        x1, x2 = scale.x(t1), max(scale.x(t2), scale.x(t1) + 2)
        colour = _BAR.get(status, _RED)
        took = f"{status} after {(t2 - t1) * 1000:.1f} ms"
        what = "never answered" if status == "open" else took
        detail = {
            "timeout": f"; missing ranks {end_ev.get('missing')}",
            "superseded": f" by v{end_ev.get('by')}",
        }.get(status, "")
        title = (
            f"barrier v{version}: started at +{(t1 - scale.t0) * 1000:.2f} ms "
            f"(expects {ev.get('expected', '?')}), {what}{detail}"
        )
        dash = ' stroke-dasharray="4,3"' if status == "open" else ""
        out.append(
            f"<g><title>{_esc(title)}</title>"
            f'<rect x="{x1:.1f}" y="{_TOP}" width="{x2 - x1:.1f}" height="{bottom - _TOP}" '
            f'fill="{colour}" fill-opacity="0.08"/>'
            f'<rect x="{x1:.1f}" y="{y - 4:.1f}" width="{x2 - x1:.1f}" height="8" rx="2" '
            f'fill="{colour}" fill-opacity="0.85" stroke="{colour}"{dash}/>'
            f'<text x="{x1 + 2:.1f}" y="{y - 7:.1f}" font-size="9" fill="{colour}">'
            f"v{_esc(version)}</text></g>"
        )
    return out


def _gap_marks(scale: _Scale, bottom: float) -> list[str]:
    """A torn strip where quiet time was cut, labelled with how much."""
    out = []
    for a, b in scale.gaps:
        xa, xb = scale.x(a), scale.x(b)
        mid, y_mid = (xa + xb) / 2, (_TOP + bottom) / 2
        title = f"{_tick_label((b - a) * 1000)} without journal events (not to scale)"
        out.append(
            f"<g><title>{_esc(title)}</title>"
            f'<rect x="{xa + 6:.1f}" y="{_TOP - 4}" width="{xb - xa - 12:.1f}" '
            f'height="{bottom - _TOP + 4}" fill="#fff" fill-opacity="0.9"/>'
            f'<text x="{mid:.1f}" y="{y_mid:.1f}" font-size="9" fill="{_GREY}" '
            f'text-anchor="middle" dominant-baseline="central" '
            f'transform="rotate(-90 {mid:.1f} {y_mid:.1f})">'
            f"\u22ef {_esc(_tick_label((b - a) * 1000))} \u22ef</text></g>"
        )
    return out


def _stop_lines(
    events: Sequence[tuple[float, Mapping[str, Any]]], scale: _Scale, bottom: float
) -> list[str]:
    out = []
    for t, ev in events:
        kind = ev.get("ev")
        if kind not in ("stop_begin", "stop_end"):
            continue
        x = scale.x(t)
        # stop() reads to the left of its line and "stopped" to the right, so the two
        # labels do not collide when stop() is quick.
        label = "stop()" if kind == "stop_begin" else "stopped"
        left = kind == "stop_begin" or x > _WIDTH - 60
        if kind == "stop_begin" and x < _LEFT + 40:
            left = False
        anchor, dx = ("end", -3) if left else ("start", 3)
        out.append(
            f"<g><title>{_esc(_event_title(t, scale.t0, ev))}</title>"
            f'<line x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{bottom}" stroke="{_DARK}" '
            f'stroke-width="1.2" stroke-dasharray="4,3"/>'
            f'<text x="{x + dx:.1f}" y="{bottom + 14}" font-size="10" fill="{_DARK}" '
            f'text-anchor="{anchor}">{label}</text></g>'
        )
    return out


def _loss_marks(
    e: ReportEntry,
    events: Sequence[tuple[float, Mapping[str, Any]]],
    scale: _Scale,
    y_of: Mapping[str, float],
) -> list[str]:
    """A flag on the rank lane at the event that best explains each stream's losses (the one
    `journal_view.blame` names, as the text report does), or at the end of the journal."""
    out = []
    for s in e.streams:
        lost = s.get("lost")
        rank, stream = _int(s.get("rank")), s.get("stream")
        if not isinstance(lost, Mapping) or not lost or rank is None:
            continue
        total = sum(int(n) for rules in lost.values() for n in rules.values())
        unexplained = any("unexplained" in rules for rules in lost.values())
        cause = blame([ev for _, ev in events], rank, str(stream))
        t = events[-1][0] if cause is None else float(cause["t"])  # blame() only sees timed events
        lane = f"rank{rank}"
        if lane not in y_of or total == 0:
            continue
        x, y = scale.x(t), y_of[lane] + _STREAM_DY.get(str(stream), 0.0)
        colour = _RED if unexplained else _AMBER
        detail = "; ".join(
            f"{where}: {n} {rule}" for where, rules in lost.items() for rule, n in rules.items()
        )
        anchor, dx = ("end", -8) if x > _WIDTH - 90 else ("start", 8)
        out.append(
            f"<g><title>{_esc(f'rank {rank} {stream}: {total} lines lost ({detail})')}"
            f"{_esc(_cause_text(cause, scale.t0))}</title>"
            + _poly(((x - 5, y - 12), (x + 5, y - 12), (x, y - 4)), colour)
            + f'<text x="{x + dx:.1f}" y="{y - 5:.1f}" font-size="10" font-weight="600" '
            f'fill="{colour}" text-anchor="{anchor}">{total:,} lost</text></g>'
        )
    return out


def _cause_text(cause: Event | None, t0: float) -> str:
    if cause is None:
        return ""
    return f"; blamed on {_event_title(float(cause['t']), t0, cause)}"
