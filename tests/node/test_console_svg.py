"""The console's server-side charts: well-formed SVG, honest bar lengths, escaped labels."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from node.console.svg import axis, horizontal_bars, number, stacked_bars

NS = {"s": "http://www.w3.org/2000/svg"}


def parse(text: str) -> ET.Element:
    root = ET.fromstring(text)  # raises on anything that is not well-formed XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and root.get("role") == "img"
    return root


def bars(root: ET.Element) -> list[ET.Element]:
    return root.findall(".//s:g[@class='chart-bar']/s:rect", NS)


def test_stacked_bar_heights_are_proportional_to_values_and_stack_per_day():
    text = stacked_bars(chart_id="q", title="每日查询", categories=["12-01", "12-02", "12-03"],
                        series=[("fund", [3, 0, 12]), ("tax", [1, 5, 4])], unit="次")
    root = parse(text)
    rects = bars(root)
    assert len(rects) == 5  # zero values draw nothing
    per_unit = {float(r.get("height")) / float(r.get("data-value")) for r in rects}
    assert max(per_unit) - min(per_unit) < 0.01  # one scale for every bar
    groups = root.findall(".//s:g[@class='chart-bar']", NS)
    assert [g.get("data-total") for g in groups] == ["4", "5", "16"]
    last = groups[2].findall("s:rect", NS)  # the second segment sits on the first
    assert float(last[1].get("y")) + float(last[1].get("height")) == pytest.approx(float(last[0].get("y")))
    titles = [r.find("s:title", NS).text for r in rects]
    assert "12-03 · fund: 12 次" in titles and "12-02 · tax: 5 次" in titles
    assert root.find("s:title", NS).text == "每日查询"
    assert root.find("s:desc", NS).text == "12-01: 4 次; 12-02: 5 次; 12-03: 16 次"


def test_the_tallest_bar_fits_the_plot_and_the_axis_is_nice():
    root = parse(stacked_bars(chart_id="c", title="t", categories=["a", "b"], series=[("x", [7, 70])]))
    heights = [float(r.get("height")) for r in bars(root)]
    assert heights[1] == pytest.approx(heights[0] * 10)
    assert heights[1] == pytest.approx(200 * 70 / 80)  # axis 0..80 in steps of 20
    ticks = [t.text for t in root.findall(".//s:g[@class='chart-axis']/s:text", NS)]
    assert ticks == ["0", "20", "40", "60", "80"]
    assert [axis(v) for v in (3, 7, 40, 70, 101, 2500)] == [(3, 1), (8, 2), (40, 10), (80, 20), (150, 50), (3000, 1000)]
    assert axis(0.3) == pytest.approx((0.3, 0.1)) and axis(0) == (1.0, 0.25)


def test_labels_titles_and_names_are_escaped():
    evil = '<script>alert("x")</script>&'
    text = stacked_bars(chart_id='id"><x', title=evil, categories=[evil], series=[(evil, [2])])
    assert "<script>" not in text and 'id"><x' not in text
    root = parse(text)
    assert root.find("s:title", NS).text == evil
    assert root.findall(".//s:text[@class='chart-label']", NS)[0].text == evil
    assert bars(root)[0].get("data-series") == evil
    text = horizontal_bars(chart_id="h", title=evil, items=[(evil, 3), ("b", 1)])
    root = parse(text)
    assert "<script>" not in text and root.findall(".//s:text[@class='chart-label']", NS)[0].text == evil


def test_horizontal_bars_are_proportional_and_carry_their_numbers():
    root = parse(horizontal_bars(chart_id="h", title="拒绝", items=[("fund", 4), ("tax", 1), ("none", 0)],
                                 unit="次"))
    widths = [float(r.get("width")) for r in bars(root)]
    assert widths[0] == pytest.approx(widths[1] * 4) and widths[2] == 0
    assert [t.text for t in root.findall(".//s:text[@class='chart-total']", NS)] == ["4", "1", "0"]


def test_nothing_to_show_says_so_and_bad_data_is_refused():
    root = parse(stacked_bars(chart_id="e", title="t", categories=["a"], series=[("x", [0])], empty="暂无数据"))
    assert root.find(".//s:text", NS).text == "暂无数据" and not bars(root)
    assert parse(horizontal_bars(chart_id="e", title="t", items=[], empty="none")).find(".//s:text", NS).text == "none"
    with pytest.raises(ValueError):
        stacked_bars(chart_id="e", title="t", categories=["a", "b"], series=[("x", [1])])
    with pytest.raises(ValueError):
        stacked_bars(chart_id="e", title="t", categories=["a"], series=[("x", [-1])])


def test_numbers_read_like_numbers():
    assert [number(v) for v in (0, 1234567, 0.25, 1.5, 2.0)] == ["0", "1,234,567", "0.25", "1.5", "2"]
