"""app/console/charts.py: scales, round ticks, time ticks, the empty chart, and labels escaped."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from app.console import charts
from app.console.charts import Linear, Series, nice_ticks, number, time_ticks

MIN = 60_000
T0 = 1_764_633_600_000  # 2025-12-02 00:00 UTC, a whole day


def parse(svg) -> ET.Element:
    return ET.fromstring(str(svg))  # well-formed XML, or this raises


def ns(tag: str) -> str:
    return "{http://www.w3.org/2000/svg}" + tag


def test_a_linear_scale_maps_ends_to_ends_and_inverts_for_y():
    x = Linear((0, 100), (70, 740))
    assert x(0) == 70 and x(100) == 740 and x(50) == pytest.approx(405)
    y = Linear((0, 10), (200, 20))  # up the screen
    assert y(0) == 200 and y(10) == 20 and y(5) == pytest.approx(110)
    assert Linear((3, 3), (1, 9))(3) == 1  # a zero-width domain does not divide by zero


@pytest.mark.parametrize("low, high, expected", [
    (0, 10, [0, 2, 4, 6, 8, 10]),
    (0, 7, [0, 2, 4, 6, 8]),
    (0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1]),
    (0, 95, [0, 20, 40, 60, 80, 100]),
    (0, 1234, [0, 250, 500, 750, 1000, 1250]),
    (0, 0, [0, 0.2, 0.4, 0.6, 0.8, 1]),  # nothing to show still makes an axis
])
def test_ticks_are_round_and_cover_the_values(low, high, expected):
    ticks = nice_ticks(low, high)
    assert ticks == pytest.approx(expected)
    assert ticks[0] <= low and ticks[-1] >= high


def test_time_ticks_fall_on_whole_steps_and_label_by_the_span():
    ticks, label = time_ticks(T0 + 3 * MIN + 5000, T0 + 63 * MIN)
    assert ticks == [T0 + m * MIN for m in (10, 20, 30, 40, 50, 60)]  # an hour: every 10 min, from the first
    assert [label(t) for t in ticks] == ["00:10", "00:20", "00:30", "00:40", "00:50", "01:00"]
    week, label = time_ticks(T0, T0 + 7 * 1440 * MIN)
    assert len(week) <= 8 and all(t % (1440 * MIN) == 0 for t in week)
    assert label(week[0]) == "Dec 02"


def test_numbers_read_well_on_an_axis():
    assert [number(v) for v in (0, 7, 1234, 12_500, 2_000_000, 0.25, 12.5)] == \
        ["0", "7", "1,234", "12.5k", "2M", "0.25", "12.5"]


def test_bars_stack_per_bucket_with_axes_ticks_legend_and_a_title():
    a = Series("succeeded", [(T0, 3), (T0 + MIN, 1)], "o-resolution")
    b = Series("failed", [(T0, 2), (T0 + MIN, 0)], "o-failure")
    svg = charts.bars("tp", "Throughput", [a, b], T0, T0 + 10 * MIN, MIN)
    root = parse(svg)
    assert root.find(ns("title")).text == "Throughput"
    rects = [r for r in root.iter(ns("rect")) if "bar" in r.get("class")]
    assert len(rects) == 3  # a zero draws nothing
    first = [r for r in rects if float(r.get("x")) == pytest.approx(charts.LEFT)]
    assert len(first) == 2
    lower, upper = sorted(first, key=lambda r: -float(r.get("y")))
    assert float(upper.get("y")) + float(upper.get("height")) == pytest.approx(float(lower.get("y")), abs=0.11)
    heights = {r.get("class"): float(r.get("height")) for r in first}
    assert heights["bar o-resolution"] == pytest.approx(1.5 * heights["bar o-failure"], rel=0.05)
    texts = [t.text for t in root.iter(ns("text"))]
    assert "succeeded" in texts and "failed" in texts  # the legend
    assert "0" in texts and "5" in texts  # y ticks up to the tallest stack (5)
    assert "00:00" in texts  # x ticks


def test_lines_break_at_gaps_and_mark_every_point():
    s = Series("p95", [(T0, 10.0), (T0 + MIN, None), (T0 + 2 * MIN, 30.0), (T0 + 3 * MIN, 20.0)], "k1")
    root = parse(charts.lines("lat", "Latency", [s], T0, T0 + 5 * MIN, y_format=lambda v: f"{v:g} ms"))
    path = next(p for p in root.iter(ns("path")))
    assert path.get("d").count("M") == 2 and path.get("d").count("L") == 1
    assert len(list(root.iter(ns("circle")))) == 3
    assert "30 ms" in [t.text for t in root.iter(ns("text"))]


def test_an_empty_range_says_so():
    for svg in (charts.bars("e", "Throughput", [Series("x", [(T0, 0)], "k0")], T0, T0 + MIN, MIN),
                charts.lines("e", "Latency", [Series("x", [(T0, None)], "k0")], T0, T0 + MIN)):
        root = parse(svg)
        assert charts.EMPTY in [t.text for t in root.iter(ns("text"))]
        assert not list(root.iter(ns("path"))) and not [r for r in root.iter(ns("rect")) if "bar" in r.get("class")]


def test_every_label_is_escaped():
    evil = '<script>alert(1)</script>"&'
    s = Series(evil, [(T0, 1)], 'k0" onload="x')
    for svg in (charts.bars("b", evil, [s], T0, T0 + MIN, MIN, desc=evil), charts.lines("l", evil, [s], T0, T0 + MIN)):
        text = str(svg)
        assert "<script" not in text and 'onload="' not in text
        root = parse(svg)  # still one well-formed SVG
        assert root.find(ns("title")).text == evil
        assert evil in [t.text for t in root.iter(ns("text"))]  # the legend, as text


def test_a_long_label_is_cut_in_the_legend():
    s = Series("f" * 100, [(T0, 1)], "k0")
    legend = [t.text for t in parse(charts.bars("b", "t", [s], T0, T0 + MIN, MIN)).iter(ns("text"))
              if t.get("class") == "legend"]
    assert legend == ["f" * (charts.LABEL_CHARS - 1) + "…"]


def test_no_style_attribute_or_script_anywhere():
    s = Series("a", [(T0, 1), (T0 + MIN, 2)], "k0")
    for svg in (charts.bars("b", "t", [s], T0, T0 + 2 * MIN, MIN), charts.lines("l", "t", [s], T0, T0 + 2 * MIN)):
        assert not re.search(r"\sstyle\s*=|<script|\son[a-z]+\s*=", str(svg))
