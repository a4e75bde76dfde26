"""Small pieces of the HTML report that its page (`html_report.py`) and its timeline
(`html_timeline.py`) share: escaping, numbers, how a rank ended, and the marks drawn for
journal events (the legend is built from the same shapes the lanes use)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .stack import Ev
from .summary import duration_text


def esc(value: Any) -> str:
    """HTML-escape anything, with control characters shown as escapes: journal fields and
    problem text can carry whatever bytes a child wrote."""
    text = value if isinstance(value, str) else str(value)
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates
    return html.escape(text, quote=True)


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def num(value: Any) -> str:
    n = as_int(value)
    return "&ndash;" if n is None else f"{n:,}"


def ms(seconds: Any) -> str:
    return duration_text(seconds) if isinstance(seconds, (int, float)) else "?"


def exit_text(info: Mapping[str, Any]) -> str:
    if not info:
        return "?"
    if info.get("exit_signal"):
        text = f"signal {info['exit_signal']}"
    elif info.get("exit_code") is not None:
        text = f"exit {info['exit_code']}"
    else:
        text = "no exit status"
    return text + (", crashed" if info.get("crashed") else "")


RED, GREEN, AMBER, BLUE = "#cf222e", "#1a7f37", "#bf8700", "#0969da"
GREY, DARK, PURPLE, TEAL = "#8c959f", "#24292f", "#8250df", "#1b7c83"
BAR = {"completed": GREEN, "superseded": AMBER, "timeout": RED, "open": RED}

BAD_EVENTS = frozenset(
    {
        Ev.FORWARDER_LOST,
        Ev.CHILD_KILLED,
        Ev.BARRIER_TIMEOUT,
        Ev.BARRIER_STALE,
        Ev.BARRIER_NO_OPEN,
        Ev.BARRIER_UNEXPECTED_ACK,
        Ev.FILE_WRITE_ERROR,
        Ev.FILE_POST_AFTER_CLOSE,
        Ev.SENDER_FAILED,
        Ev.FORWARDER_FAILED,
        Ev.TAILS_MISSING,
        Ev.QUIESCE_INCOMPLETE,
        Ev.SENDERS_MISSING,
        Ev.CHANNEL_CLOSED,
    }
)
DRAWN_OTHERWISE = frozenset(
    {Ev.BARRIER_STARTED, Ev.BARRIER_COMPLETED, Ev.BARRIER_SUPERSEDED, Ev.STOP_BEGIN, Ev.STOP_END}
)
HIDDEN = frozenset({Ev.CONSOLE_BYTES})  # same moment and number as `eof`
NAMED = frozenset(
    {
        Ev.CHILD_SPAWNED,
        Ev.EOF,
        Ev.PARTIAL_FORWARDED,
        Ev.FLUSH_NONE_POSTED,
        Ev.CHILD_EXITED,
        Ev.SEND_SKIPPED,
        Ev.ABORT,
        *BAD_EVENTS,
    }
)


def marker(kind: str, x: float, y: float, ev: Mapping[str, Any] | None = None) -> str:
    """The shape for one event kind, centred on (x, y)."""
    if kind == Ev.CHILD_SPAWNED:
        return (
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="#fff" stroke="{GREY}" '
            'stroke-width="1.5"/>'
        )
    if kind == Ev.EOF:
        return f'<rect x="{x - 1.5:.1f}" y="{y - 6:.1f}" width="3" height="12" fill="{BLUE}"/>'
    if kind == Ev.PARTIAL_FORWARDED:
        return poly(((x, y - 5), (x + 5, y), (x, y + 5), (x - 5, y)), PURPLE)
    if kind == Ev.FLUSH_NONE_POSTED:
        return poly(((x - 2, y - 5), (x + 5, y), (x - 2, y + 5)), TEAL)
    if kind == Ev.BARRIER_ACKED:
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{GREEN}"/>'
    if kind == Ev.CHILD_EXITED:
        failing = bool(ev and (ev.get("signal") or ev.get("code")))
        colour = RED if failing else DARK
        return f'<rect x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7" fill="{colour}"/>'
    if kind == Ev.SEND_SKIPPED:
        return poly(((x - 5, y - 5), (x + 5, y - 5), (x, y + 4)), RED)
    if kind == Ev.ABORT:  # amber when stop had to drain bytes still in the pipe (SPEC 1.11)
        colour = AMBER if ev and ev.get("drained_bytes") else GREY
        return f'<rect x="{x - 1:.1f}" y="{y - 7:.1f}" width="2" height="14" fill="{colour}"/>'
    if kind in BAD_EVENTS:
        d = 4.0
        return (
            f'<path d="M{x - d:.1f},{y - d:.1f}L{x + d:.1f},{y + d:.1f}'
            f'M{x - d:.1f},{y + d:.1f}L{x + d:.1f},{y - d:.1f}" '
            f'stroke="{RED}" stroke-width="2.2"/>'
        )
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.2" fill="{GREY}"/>'


def poly(points: Iterable[tuple[float, float]], fill: str) -> str:
    pts = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
    return f'<polygon points="{pts}" fill="{fill}"/>'


_LEGEND: tuple[tuple[str, str], ...] = (
    (Ev.CHILD_SPAWNED, "spawned"),
    (Ev.EOF, "EOF on the pipe"),
    (Ev.PARTIAL_FORWARDED, "final partial line forwarded"),
    (Ev.FLUSH_NONE_POSTED, "Flush(None) posted"),
    (Ev.BARRIER_ACKED, "barrier acked"),
    (Ev.CHILD_EXITED, "child exited (red: signal or non-zero)"),
    (Ev.ABORT, "abort (amber: drained bytes)"),
    (Ev.SEND_SKIPPED, "send skipped"),
    (Ev.FORWARDER_LOST, "forwarder lost, killed, timeout, error"),
    ("other", "other event"),
)


def legend() -> str:
    """One legend for every timeline, built from the same shapes the lanes use."""

    def swatch(inner: str, w: int = 16) -> str:
        return f'<svg width="{w}" height="14" viewBox="0 0 {w} 14" aria-hidden="true">{inner}</svg>'

    items = [f"<li>{swatch(marker(k, 8, 7))}{esc(text)}</li>" for k, text in _LEGEND]
    for status, text in (("completed", "barrier completed"), ("superseded", "superseded"),
                         ("timeout", "timed out / never answered")):  # fmt: skip
        bar = f'<rect x="0" y="4" width="26" height="6" rx="2" fill="{BAR[status]}"/>'
        items.append(f"<li>{swatch(bar, 26)}{esc(text)}</li>")
    stop = f'<line x1="4" y1="0" x2="4" y2="14" stroke="{DARK}" stroke-dasharray="3,2"/>'
    items.append(f"<li>{swatch(stop, 8)}stop() began / ended</li>")
    loss = poly(((2, 2), (12, 2), (7, 10)), RED)
    items.append(f"<li>{swatch(loss)}lines lost (amber: allowed by a rule)</li>")
    return (
        '<h3>timeline legend</h3><ul class="legend">' + "".join(items) + "</ul>"
        '<p class="meta">x: ms since the first journal event; stdout events sit above a rank '
        "lane's midline, stderr below; hover a mark for the event.</p>"
    )
