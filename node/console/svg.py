"""Charts as SVG text, drawn on the server: data in, escaped SVG out, nothing else.

The console shows the ledger's and the query log's numbers as pictures where people
would rather look than read (queries per day by partner, refusals, budget spent). No
charting script runs in the browser: the page's Content-Security-Policy allows none
inline, and an SVG drawn here needs none. Each chart is an `<svg role="img">` with a
`<title>` and `<desc>`; every bar carries its own `<title>` (a tooltip, and what a
screen reader reads) and a `data-value`; axis and legend labels are real `<text>`, set
in the page's font (the console's CSS gives CJK fonts), so Chinese labels render.
Colours are presentation attributes, not inline styles (the CSP forbids those).

Bar lengths are proportional to the values: the axis runs from 0 in "nice" steps (1, 2 or
5 times a power of ten; whole steps for whole numbers) to at or above the largest bar. Every string that reaches
the SVG is escaped here, whatever the caller passes.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from xml.sax.saxutils import escape as _escape

__all__ = ["PALETTE", "stacked_bars", "horizontal_bars", "axis", "number"]

# Restrained government-dashboard colours, distinguishable in print and for most colour
# vision deficiencies (blue, teal, orange, red, violet, light blue, brown, grey).
PALETTE = ("#1f4e79", "#2a9d8f", "#e08a2c", "#b3261e", "#6c5fb5", "#5b8fd6", "#8c6d31", "#6b7280")


def esc(text: object) -> str:
    """Text or attribute value, XML-escaped (quotes too)."""
    return _escape(str(text), {'"': "&quot;", "'": "&#39;"})


def number(value: float) -> str:
    """A value as people read it: integers with thousands separators, others to 3 decimals."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3f}".rstrip("0").rstrip(".")


def axis(value: float, *, ticks: int = 4) -> tuple[float, float]:
    """(top, step) of an axis from 0 showing `value`: a step of 1, 2 or 5 × 10^k, about
    `ticks` steps, whole steps for whole data, and top a multiple of the step."""
    if value <= 0:
        return 1.0, 0.25
    raw = value / ticks
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    if float(value).is_integer():
        step = max(step, 1)
    return step * math.ceil(value / step - 1e-9), step


def _f(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _open(chart_id: str, title: str, desc: str, width: float, height: float) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart-svg" id="{esc(chart_id)}" '
            f'viewBox="0 0 {_f(width)} {_f(height)}" width="{_f(width)}" height="{_f(height)}" '
            f'role="img" aria-labelledby="{esc(chart_id)}-t {esc(chart_id)}-d">',
            f'<title id="{esc(chart_id)}-t">{esc(title)}</title>',
            f'<desc id="{esc(chart_id)}-d">{esc(desc)}</desc>']


def _empty(chart_id: str, title: str, empty: str, width: float) -> str:
    parts = _open(chart_id, title, empty, width, 80)
    parts.append(f'<text x="{_f(width / 2)}" y="45" text-anchor="middle" class="chart-empty">{esc(empty)}</text>')
    return "\n".join(parts + ["</svg>"])


def _legend(names: Sequence[str], colors: Sequence[str], top: float, left: float,
            width: float) -> tuple[list[str], float]:
    """Legend swatches in rows; returns the elements and the height used."""
    parts, x, y = ['<g class="chart-legend">'], left, top
    for name, color in zip(names, colors):
        span = 22 + 8 * len(name) + 7 * sum(1 for ch in name if ord(ch) > 0x2E80) + 18
        if x + span > left + width and x > left:
            x, y = left, y + 20
        parts.append(f'<rect x="{_f(x)}" y="{_f(y)}" width="12" height="12" fill="{esc(color)}"/>'
                     f'<text x="{_f(x + 17)}" y="{_f(y + 11)}">{esc(name)}</text>')
        x += span
    parts.append("</g>")
    return parts, y - top + 20


def stacked_bars(*, chart_id: str, title: str, categories: Sequence[str],
                 series: Sequence[tuple[str, Sequence[float]]], colors: Sequence[str] | None = None,
                 unit: str = "", empty: str = "no data", width: float = 880,
                 plot_height: float = 200) -> str:
    """Vertical bars, one per category (a day), each stacked from the series (partners, ...).

    Args:
        categories: the x labels, in order.
        series: (name, one value per category) for each stack segment, bottom first.
        colors: one per series (default PALETTE, cycled).
        unit: appended to the numbers in the bars' titles ("次", "elements").
        empty: the text shown when every value is 0 or there is no category.

    Raises:
        ValueError: a series with another number of values than there are categories,
            or a negative value.
    """
    # Long by design: one SVG document, written top to bottom (axes, bars, legend) so
    # the markup reads in the order it draws.
    for name, values in series:
        if len(values) != len(categories):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(categories)} categories")
        if any(v < 0 for v in values):
            raise ValueError(f"series {name!r} has a negative value")
    totals = [sum(values[i] for _, values in series) for i in range(len(categories))]
    if not categories or not any(totals):
        return _empty(chart_id, title, empty, width)
    colors = list(colors or [PALETTE[i % len(PALETTE)] for i in range(len(series))])
    left, right, top = 64.0, 16.0, 22.0
    plot_w = width - left - right
    top_value, step = axis(max(totals))
    scale = plot_height / top_value
    base = top + plot_height
    suffix = f" {unit}" if unit else ""
    legend, legend_h = _legend([n for n, _ in series], colors, base + 40, left, plot_w)
    height = base + 40 + legend_h + 6
    desc = "; ".join(f"{c}: {number(t)}{suffix}" for c, t in zip(categories, totals))
    parts = _open(chart_id, title, desc, width, height)
    parts.append('<g class="chart-axis">')
    for i in range(round(top_value / step) + 1):  # a gridline per step
        value = step * i
        y = base - value * scale
        parts.append(f'<line x1="{_f(left)}" x2="{_f(width - right)}" y1="{_f(y)}" y2="{_f(y)}" '
                     f'stroke="{"#9aa7b5" if i == 0 else "#e3e8ee"}" stroke-width="1"/>'
                     f'<text x="{_f(left - 8)}" y="{_f(y + 4)}" text-anchor="end">{esc(number(value))}</text>')
    parts.append("</g>")
    slot = plot_w / len(categories)
    bar_w = max(2.0, min(56.0, slot * 0.62))
    every = max(1, math.ceil(len(categories) * 62 / plot_w))  # thin the x labels when crowded
    for i, category in enumerate(categories):
        x = left + slot * i + (slot - bar_w) / 2
        y = base
        parts.append(f'<g class="chart-bar" data-category="{esc(category)}" data-total="{esc(totals[i])}">')
        for (name, values), color in zip(series, colors):
            value = values[i]
            if value <= 0:
                continue
            h = value * scale
            y -= h
            parts.append(f'<rect x="{_f(x)}" y="{_f(y)}" width="{_f(bar_w)}" height="{_f(h)}" '
                         f'fill="{esc(color)}" data-series="{esc(name)}" data-value="{esc(value)}">'
                         f'<title>{esc(category)} · {esc(name)}: {esc(number(value))}{esc(suffix)}</title></rect>')
        if totals[i] and bar_w >= 14:
            parts.append(f'<text class="chart-total" x="{_f(x + bar_w / 2)}" y="{_f(y - 5)}" '
                         f'text-anchor="middle">{esc(number(totals[i]))}</text>')
        parts.append("</g>")
        if i % every == 0:
            parts.append(f'<text class="chart-label" x="{_f(left + slot * i + slot / 2)}" y="{_f(base + 20)}" '
                         f'text-anchor="middle">{esc(category)}</text>')
    return "\n".join(parts + legend + ["</svg>"])


def horizontal_bars(*, chart_id: str, title: str, items: Sequence[tuple[str, float]],
                    color: str = PALETTE[0], unit: str = "", empty: str = "no data",
                    width: float = 880, label_width: float = 180, row: float = 28) -> str:
    """One horizontal bar per (label, value), in the order given, value written at its end.

    Raises:
        ValueError: a negative value.
    """
    if any(v < 0 for _, v in items):
        raise ValueError("horizontal bars need values of at least 0")
    if not items or not any(v for _, v in items):
        return _empty(chart_id, title, empty, width)
    top, right = 8.0, 90.0
    plot_w = width - label_width - right
    scale = plot_w / axis(max(v for _, v in items))[0]
    height = top + row * len(items) + 8
    suffix = f" {unit}" if unit else ""
    desc = "; ".join(f"{label}: {number(v)}{suffix}" for label, v in items)
    parts = _open(chart_id, title, desc, width, height)
    for i, (label, value) in enumerate(items):
        y = top + row * i
        w = value * scale
        parts.append(f'<g class="chart-bar" data-category="{esc(label)}" data-total="{esc(value)}">'
                     f'<text class="chart-label" x="{_f(label_width - 10)}" y="{_f(y + row / 2 + 5)}" '
                     f'text-anchor="end">{esc(label)}</text>'
                     f'<rect x="{_f(label_width)}" y="{_f(y + 5)}" width="{_f(w)}" height="{_f(row - 10)}" '
                     f'fill="{esc(color)}" data-value="{esc(value)}">'
                     f'<title>{esc(label)}: {esc(number(value))}{esc(suffix)}</title></rect>'
                     f'<text class="chart-total" x="{_f(label_width + w + 6)}" y="{_f(y + row / 2 + 5)}">'
                     f'{esc(number(value))}</text></g>')
    return "\n".join(parts + ["</svg>"])
