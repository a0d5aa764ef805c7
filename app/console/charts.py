"""Charts drawn on the server as inline SVG: stacked bars per time bucket and lines over time, with
axes, round ticks, a legend, and a <title>/<desc> for screen readers. The console ships no chart
library and no inline script (its CSP forbids it); colours come from classes in console.css.

Every label is escaped here (function and service names come from services), and the result is
Markup, so a template shows it as it is.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Callable, Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 760, 250
LEFT, RIGHT, TOP, BOTTOM = 70, 16, 14, 62  # plot margins: y labels, x labels and the legend below
LABEL_CHARS = 40  # a longer legend label is cut (the table under the chart has it whole)
EMPTY = "No calls in this range"

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
TIME_STEPS = (MINUTE, 2 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 2 * HOUR, 3 * HOUR,
              6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY)


@dataclass
class Series:
    """One thing drawn: `points` are (x, y), x in epoch ms; y None leaves a gap in a line."""
    label: str
    points: Sequence[tuple[float, float | None]]
    css: str  # its colour's class (console.css: .chart .k0 ...)


def number(value: float) -> str:
    """A count or a measure for an axis: 1,234 / 12.5 / 3.4k / 1.2M."""
    if value is None:
        return ""
    size = abs(value)
    if size >= 1_000_000:
        return f"{value / 1_000_000:.1f}M".replace(".0M", "M")
    if size >= 10_000:
        return f"{value / 1000:.1f}k".replace(".0k", "k")
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".") if size < 10 else f"{value:,.1f}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart), about `count` of them, from at or
    below `low` to at or above `high`."""
    if not high > low:
        high = low + 1
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if raw <= m * power * (1 + 1e-9))
    first = math.floor(low / step + 1e-9) * step
    last = math.ceil(high / step - 1e-9) * step
    n = int(round((last - first) / step))
    return [round(first + i * step, 10) for i in range(n + 1)]


def time_ticks(start_ms: int, end_ms: int, count: int = 6) -> tuple[list[int], Callable[[int], str]]:
    """Tick times (whole steps of UTC) within [start, end], at most about `count`, and how to label them."""
    span = max(1, end_ms - start_ms)
    step = next((s for s in TIME_STEPS if span / s <= count), TIME_STEPS[-1])
    first = -(-start_ms // step) * step
    ticks = list(range(first, end_ms + 1, step))
    if step >= DAY:
        fmt = "%b %d"
    elif span > DAY:
        fmt = "%b %d %H:%M"
    else:
        fmt = "%H:%M"
    return ticks, lambda ms: dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime(fmt)


class Linear:
    """Maps a domain onto a range linearly (a zero-width domain maps to the range's start)."""

    def __init__(self, domain: tuple[float, float], out: tuple[float, float]):
        self.d0, self.d1 = domain
        self.r0, self.r1 = out

    def __call__(self, value: float) -> float:
        if self.d1 == self.d0:
            return self.r0
        return self.r0 + (value - self.d0) * (self.r1 - self.r0) / (self.d1 - self.d0)


def _f(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _cut(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"


class _Canvas:
    def __init__(self, chart_id: str, title: str, desc: str):
        self.parts = [f'<svg class="chart-svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
                      f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" '
                      f'xmlns="http://www.w3.org/2000/svg">',
                      f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
                      f'<desc id="{escape(chart_id)}-desc">{escape(desc)}</desc>']

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def done(self) -> Markup:
        return Markup("".join(self.parts) + "</svg>")


def _plot_box() -> tuple[float, float, float, float]:
    return LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM


def _empty(chart_id: str, title: str) -> Markup:
    canvas = _Canvas(chart_id, title, EMPTY + ".")
    x0, x1, y0, y1 = _plot_box()
    canvas.add(f'<rect class="frame" x="{_f(x0)}" y="{_f(y0)}" width="{_f(x1 - x0)}" height="{_f(y1 - y0)}"/>')
    canvas.add(f'<text class="empty" x="{_f((x0 + x1) / 2)}" y="{_f((y0 + y1) / 2)}" '
               f'text-anchor="middle">{EMPTY}</text>')
    return canvas.done()


def _axes(canvas: _Canvas, x: Linear, y: Linear, start_ms: int, end_ms: int, y_ticks: list[float],
          y_format: Callable[[float], str]) -> None:
    x0, x1, y0, y1 = _plot_box()
    for value in y_ticks:
        at = y(value)
        canvas.add(f'<line class="grid" x1="{_f(x0)}" x2="{_f(x1)}" y1="{_f(at)}" y2="{_f(at)}"/>')
        canvas.add(f'<text class="tick" x="{_f(x0 - 6)}" y="{_f(at + 4)}" text-anchor="end">'
                   f'{escape(y_format(value))}</text>')
    ticks, label = time_ticks(start_ms, end_ms)
    canvas.add(f'<line class="axis" x1="{_f(x0)}" x2="{_f(x1)}" y1="{_f(y1)}" y2="{_f(y1)}"/>')
    for ms in ticks:
        at = x(ms)
        canvas.add(f'<line class="axis" x1="{_f(at)}" x2="{_f(at)}" y1="{_f(y1)}" y2="{_f(y1 + 4)}"/>')
        canvas.add(f'<text class="tick" x="{_f(at)}" y="{_f(y1 + 17)}" text-anchor="middle">'
                   f'{escape(label(ms))}</text>')


def _legend(canvas: _Canvas, series: Sequence[Series]) -> None:
    at, y = float(LEFT), HEIGHT - 16
    for s in series:
        label = _cut(s.label)
        canvas.add(f'<rect class="swatch {escape(s.css)}" x="{_f(at)}" y="{_f(y - 9)}" width="10" height="10"/>')
        canvas.add(f'<text class="legend" x="{_f(at + 14)}" y="{_f(y)}">{escape(label)}</text>')
        at += 14 + 7 * len(label) + 18


def _has_data(series: Sequence[Series]) -> bool:
    return any(v for s in series for _, v in s.points if v)


def bars(chart_id: str, title: str, series: Sequence[Series], start_ms: int, end_ms: int, step_ms: int,
         y_format: Callable[[float], str] = number, desc: str = "") -> Markup:
    """Bars stacked per bucket (a bucket starts at a point's x and is `step_ms` wide), one colour
    per series, in order from the axis up."""
    if not _has_data(series):
        return _empty(chart_id, title)
    totals: dict[float, float] = {}
    for s in series:
        for at, v in s.points:
            totals[at] = totals.get(at, 0) + (v or 0)
    y_ticks = nice_ticks(0, max(totals.values()))
    x0, x1, y0, y1 = _plot_box()
    x, y = Linear((start_ms, end_ms), (x0, x1)), Linear((0, y_ticks[-1]), (y1, y0))
    canvas = _Canvas(chart_id, title, desc or title)
    _axes(canvas, x, y, start_ms, end_ms, y_ticks, y_format)
    _, label = time_ticks(start_ms, end_ms)
    stacked: dict[float, float] = {}
    width = max(1.0, x(start_ms + step_ms) - x(start_ms) - 1)
    for s in series:
        for at, v in s.points:
            if not v:
                continue
            below = stacked.get(at, 0)
            top = below + v
            stacked[at] = top
            canvas.add(f'<rect class="bar {escape(s.css)}" x="{_f(x(at))}" y="{_f(y(top))}" width="{_f(width)}" '
                       f'height="{_f(y(below) - y(top))}"><title>{escape(label(int(at)))} · '
                       f'{escape(s.label)}: {escape(y_format(v))}</title></rect>')
    _legend(canvas, series)
    return canvas.done()


def lines(chart_id: str, title: str, series: Sequence[Series], start_ms: int, end_ms: int,
          y_format: Callable[[float], str] = number, desc: str = "") -> Markup:
    """One line per series (a point each, joined; a None breaks the line)."""
    if not _has_data(series):
        return _empty(chart_id, title)
    top = max(v for s in series for _, v in s.points if v is not None)
    y_ticks = nice_ticks(0, top)
    x0, x1, y0, y1 = _plot_box()
    x, y = Linear((start_ms, end_ms), (x0, x1)), Linear((0, y_ticks[-1]), (y1, y0))
    canvas = _Canvas(chart_id, title, desc or title)
    _axes(canvas, x, y, start_ms, end_ms, y_ticks, y_format)
    _, label = time_ticks(start_ms, end_ms)
    for s in series:
        path, pen = [], "M"
        for at, v in s.points:
            if v is None:
                pen = "M"
                continue
            path.append(f"{pen}{_f(x(at))} {_f(y(v))}")
            pen = "L"
        if path:
            canvas.add(f'<path class="line {escape(s.css)}" d="{" ".join(path)}"/>')
        for at, v in s.points:
            if v is not None:
                canvas.add(f'<circle class="dot {escape(s.css)}" cx="{_f(x(at))}" cy="{_f(y(v))}" r="2.5">'
                           f'<title>{escape(label(int(at)))} · {escape(s.label)}: {escape(y_format(v))}</title>'
                           f'</circle>')
    _legend(canvas, series)
    return canvas.done()
