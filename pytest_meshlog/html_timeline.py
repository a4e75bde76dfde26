"""The HTML report's timeline: one SVG per mesh, one lane per process (driver, host0..,
rank0..). Host and driver events about one rank sit on that rank's lane, stdout above the
midline and stderr below it; barriers are bands, stop() dashed lines, losses flags at the
event `journal_view.blame` names (the one the text report centres its timeline on)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from .html_parts import (
    AMBER,
    BAR,
    DARK,
    DRAWN_OTHERWISE,
    GREY,
    HIDDEN,
    NAMED,
    RED,
    as_int,
    esc,
    exit_text,
    marker,
    poly,
)
from .journal_view import Event, blame, fields_text, lane_of, timed
from .stack import Ev
from .summary import ReportEntry

_WIDTH = 1000
_LEFT = 92  # lane labels
_RIGHT = 24
_TOP = 24  # time axis
_BOTTOM = 20  # stop labels
_LANE = 26
_STREAM_DY = {"stdout": -5.0, "stderr": 5.0}

_DODGE = 6.0  # px between named markers of one lane row


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


def timeline_svg(e: ReportEntry) -> str:
    events = timed(e.journal)
    lanes = sorted(
        {lane_of(ev) for _, ev in events}
        | {f"rank{r}" for r in (as_int(s.get("rank")) for s in e.streams) if r is not None},
        key=_lane_order,
    )
    if not events:
        h = 44
        return (
            f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {h}" '
            f'role="img"><text x="{_WIDTH / 2}" y="{h / 2 + 4}" text-anchor="middle" '
            f'fill="{GREY}" font-size="13">no journal events were recorded</text></svg>'
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
        if kind in DRAWN_OTHERWISE or kind in HIDDEN:
            continue
        lane = lane_of(ev)
        y = y_of[lane] + _STREAM_DY.get(str(ev.get("stream")), 0.0)
        x = scale.x(t)
        if kind in NAMED:
            # EOF, tail, Flush(None) and exit often fall in the same few microseconds; nudge
            # each a few pixels right of the last so all stay visible (the tooltip has the time).
            nudged = max(x, last_x.get((lane, y), -math.inf) + _DODGE)
            x = nudged if nudged - x <= 3 * _DODGE else x
            last_x[(lane, y)] = x
        out.append(f"<g><title>{esc(_event_title(t, t0, ev))}</title>{marker(kind, x, y, ev)}</g>")
    out += _loss_marks(e, events, scale, y_of)
    out.append("</svg>")
    return "".join(out)


def _event_title(t: float, t0: float, ev: Mapping[str, Any]) -> str:
    return f"+{(t - t0) * 1000:.2f} ms  {ev.get('src', '?')}: {ev.get('ev')} {fields_text(ev)}".rstrip()


def _lanes_and_axis(
    lanes: Sequence[str], scale: _Scale, end: float, bottom: float, e: ReportEntry
) -> list[str]:
    crashed = {f"rank{r.get('rank')}": exit_text(r) for r in e.ranks if r.get("crashed")}
    out = []
    for k, lane in enumerate(lanes):
        top = _TOP + k * _LANE
        if k % 2 == 0:
            out.append(f'<rect x="0" y="{top}" width="{_WIDTH}" height="{_LANE}" fill="#f6f8fa"/>')
        colour = RED if lane in crashed else DARK
        note = f"<title>{esc(lane)}: {esc(crashed[lane])}</title>" if lane in crashed else ""
        label = lane + (" \u2715" if lane in crashed else "")
        out.append(
            f'<text x="10" y="{top + _LANE / 2 + 4}" font-size="12" fill="{colour}">'
            f"{note}{esc(label)}</text>"
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
                    f'<text x="{x:.1f}" y="{_TOP - 8}" font-size="10" fill="{GREY}" '
                    f'text-anchor="middle">{esc(_tick_label(tick))}</text>'
                )
                last_label = x
    out.append(f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{bottom}" stroke="{GREY}"/>')
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
        if kind == Ev.BARRIER_STARTED:
            started.setdefault(version, (t, ev))
        elif kind in (Ev.BARRIER_COMPLETED, Ev.BARRIER_SUPERSEDED, Ev.BARRIER_TIMEOUT):
            ended.setdefault(version, (t, str(kind).removeprefix("barrier_"), ev))
    last = events[-1][0]
    y = lane_y if lane_y is not None else _TOP + _LANE / 2
    out = []
    for version, (t1, ev) in started.items():
        t2, status, end_ev = ended.get(version, (last, "open", {}))
        x1, x2 = scale.x(t1), max(scale.x(t2), scale.x(t1) + 2)
        colour = BAR.get(status, RED)
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
            f"<g><title>{esc(title)}</title>"
            f'<rect x="{x1:.1f}" y="{_TOP}" width="{x2 - x1:.1f}" height="{bottom - _TOP}" '
            f'fill="{colour}" fill-opacity="0.08"/>'
            f'<rect x="{x1:.1f}" y="{y - 4:.1f}" width="{x2 - x1:.1f}" height="8" rx="2" '
            f'fill="{colour}" fill-opacity="0.85" stroke="{colour}"{dash}/>'
            f'<text x="{x1 + 2:.1f}" y="{y - 7:.1f}" font-size="9" fill="{colour}">'
            f"v{esc(version)}</text></g>"
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
            f"<g><title>{esc(title)}</title>"
            f'<rect x="{xa + 6:.1f}" y="{_TOP - 4}" width="{xb - xa - 12:.1f}" '
            f'height="{bottom - _TOP + 4}" fill="#fff" fill-opacity="0.9"/>'
            f'<text x="{mid:.1f}" y="{y_mid:.1f}" font-size="9" fill="{GREY}" '
            f'text-anchor="middle" dominant-baseline="central" '
            f'transform="rotate(-90 {mid:.1f} {y_mid:.1f})">'
            f"\u22ef {esc(_tick_label((b - a) * 1000))} \u22ef</text></g>"
        )
    return out


def _stop_lines(
    events: Sequence[tuple[float, Mapping[str, Any]]], scale: _Scale, bottom: float
) -> list[str]:
    out = []
    for t, ev in events:
        kind = ev.get("ev")
        if kind not in (Ev.STOP_BEGIN, Ev.STOP_END):
            continue
        x = scale.x(t)
        # stop() reads to the left of its line and "stopped" to the right, so the two
        # labels do not collide when stop() is quick.
        label = "stop()" if kind == Ev.STOP_BEGIN else "stopped"
        left = kind == Ev.STOP_BEGIN or x > _WIDTH - 60
        if kind == Ev.STOP_BEGIN and x < _LEFT + 40:
            left = False
        anchor, dx = ("end", -3) if left else ("start", 3)
        out.append(
            f"<g><title>{esc(_event_title(t, scale.t0, ev))}</title>"
            f'<line x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{bottom}" stroke="{DARK}" '
            f'stroke-width="1.2" stroke-dasharray="4,3"/>'
            f'<text x="{x + dx:.1f}" y="{bottom + 14}" font-size="10" fill="{DARK}" '
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
        rank, stream = as_int(s.get("rank")), s.get("stream")
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
        colour = RED if unexplained else AMBER
        detail = "; ".join(
            f"{where}: {n} {rule}" for where, rules in lost.items() for rule, n in rules.items()
        )
        anchor, dx = ("end", -8) if x > _WIDTH - 90 else ("start", 8)
        out.append(
            f"<g><title>{esc(f'rank {rank} {stream}: {total} lines lost ({detail})')}"
            f"{esc(_cause_text(cause, scale.t0))}</title>"
            + poly(((x - 5, y - 12), (x + 5, y - 12), (x, y - 4)), colour)
            + f'<text x="{x + dx:.1f}" y="{y - 5:.1f}" font-size="10" font-weight="600" '
            f'fill="{colour}" text-anchor="{anchor}">{total:,} lost</text></g>'
        )
    return out


def _cause_text(cause: Event | None, t0: float) -> str:
    if cause is None:
        return ""
    return f"; blamed on {_event_title(float(cause['t']), t0, cause)}"
