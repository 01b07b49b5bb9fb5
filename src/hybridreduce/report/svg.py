"""Small inline-SVG charts, so the report needs no JavaScript, CDN or plotting dependency.

Styling is done with presentation attributes (no CSS), so the same markup reads the same inline in the HTML page
and as a standalone ``.svg`` file in Snakemake's report. Every data mark has ``class="mark"`` and a ``<title>``
child: browsers show it as a tooltip on hover, without JavaScript.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from itertools import pairwise

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
Points = list[tuple[float, float]]


@dataclass(frozen=True)
class Chart:
    """One panel: its SVG markup (an ``<svg>`` element) and size, for laying panels out in a figure."""

    markup: str
    width: int
    height: int


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def _step(span: float, n: int = 4) -> float:
    """A round tick step (1, 2, 2.5 or 5 × 10^k) giving about ``n`` intervals over ``span``."""
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def _finite(points: Points) -> Points:
    return sorted((x, y) for x, y in points if x is not None and y is not None and math.isfinite(x)
                  and math.isfinite(y))


def line_chart(series: dict[str, Points], xlabel: str, ylabel: str, refs: dict[str, Points] | None = None,
               ref_label: str = "", lines: bool = True, colours: dict[str, str] | None = None, width: int = 520,
               height: int = 300, errors: dict[str, list[tuple[float, float, float]]] | None = None,
               hline: tuple[float, str] | None = None) -> Chart | None:
    """One polyline with point markers per series (markers only when ``lines`` is false: a scatter plot).
    ``refs[name]`` is a dashed reference line in the colour of series ``name`` (e.g. an analytic limit);
    ``colours`` keeps a series' colour the same across the panels of a figure; ``errors[name]``: ``(x, low,
    high)`` error bars (e.g. 95% CIs); ``hline``: ``(y, label)`` a grey dotted horizontal line (e.g. chance
    level). None when there is no finite point to draw."""
    series = {k: _finite(v) for k, v in series.items()}
    series = {k: v for k, v in series.items() if v}
    refs = {k: _finite(v) for k, v in (refs or {}).items() if k in series}
    bars = {k: [(x, lo, hi) for x, lo, hi in v if None not in (x, lo, hi)] for k, v in (errors or {}).items()
            if k in series}
    points = [p for pts in [*series.values(), *refs.values()] for p in pts]
    points += [(x, y) for v in bars.values() for x, lo, hi in v for y in (lo, hi)]
    if hline is not None and points:
        points.append((points[0][0], hline[0]))
    if not points:
        return None
    pad_l, pad_r, pad_t, pad_b = 56, 170, 14, 42
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:  # one x value: centre it
        x0, x1 = x0 - 0.5, x1 + 0.5
    y0, y1 = min(0.0, min(ys)), max(ys)
    y1 = y1 if y1 > y0 else y0 + 1
    ystep = _step(y1 - y0)
    y0, y1 = math.floor(y0 / ystep) * ystep, math.ceil(y1 / ystep) * ystep

    def sx(x: float) -> float:
        return pad_l + (x - x0) / (x1 - x0) * (width - pad_l - pad_r)

    def sy(y: float) -> float:
        return height - pad_b - (y - y0) / (y1 - y0) * (height - pad_t - pad_b)

    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11" fill="#333">')]
    for i in range(round((y1 - y0) / ystep) + 1):  # y grid and ticks
        y = y0 + i * ystep
        out.append(f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#e5e5e5"/>'
                   f'<text x="{pad_l - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{_fmt(y)}</text>')
    distinct = sorted(set(xs))
    # one tick per value when they are few and apart, else five evenly spaced ticks (no overlapping labels)
    spread = min((b - a for a, b in pairwise(distinct)), default=x1 - x0) / (x1 - x0)
    xstep = _step(x1 - x0)
    ticks = distinct if lines and len(distinct) <= 8 and spread > 0.08 else [
        k * xstep for k in range(math.ceil(x0 / xstep - 1e-9), math.floor(x1 / xstep + 1e-9) + 1)]
    for x in ticks:
        out.append(f'<text x="{sx(x):.1f}" y="{height - pad_b + 16}" text-anchor="middle">{_fmt(x)}</text>')
    out.append(f'<text x="{(pad_l + width - pad_r) / 2}" y="{height - 6}" text-anchor="middle">{escape(xlabel)}</text>'
               f'<text transform="translate(14 {(height - pad_b) / 2}) rotate(-90)" text-anchor="middle">'
               f"{escape(ylabel)}</text>")
    if hline is not None:
        out.append(f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{sy(hline[0]):.1f}" y2="{sy(hline[0]):.1f}" '
                   f'stroke="#888" stroke-dasharray="1 3" stroke-width="1.5"/>'
                   f'<text x="{width - pad_r - 4}" y="{sy(hline[0]) - 4:.1f}" text-anchor="end" fill="#666">'
                   f"{escape(hline[1])}</text>")
    for i, (name, pts) in enumerate(series.items()):
        colour = (colours or {}).get(name, PALETTE[i % len(PALETTE)])
        for x, lo, hi in bars.get(name, []):
            out.append(f'<line class="ci" x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{sy(lo):.1f}" y2="{sy(hi):.1f}" '
                       f'stroke="{colour}" stroke-width="1.2" opacity="0.7"/>')
        if name in refs:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in refs[name])
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.2" '
                       f'stroke-dasharray="4 3" opacity="0.8"/>')
        if lines and len(pts) > 1:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in pts:
            tip = f"{escape(name)}: {escape(xlabel)} = {x:.4g}, {escape(ylabel)} = {y:.4g}"
            out.append(f'<circle class="mark" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{colour}">'
                       f"<title>{tip}</title></circle>")
        ly = pad_t + 10 + 16 * i
        out.append(f'<rect x="{width - pad_r + 12}" y="{ly - 5}" width="12" height="4" fill="{colour}"/>'
                   f'<text x="{width - pad_r + 30}" y="{ly}">{escape(name)}</text>')
    if refs:
        ly = pad_t + 10 + 16 * len(series)
        out.append(f'<line x1="{width - pad_r + 12}" x2="{width - pad_r + 24}" y1="{ly - 3}" y2="{ly - 3}" '
                   f'stroke="#555" stroke-dasharray="4 3"/><text x="{width - pad_r + 30}" y="{ly}">'
                   f"{escape(ref_label)}</text>")
    out.append("</svg>")
    return Chart("".join(out), width, height)


def heatmap(values: dict[tuple[str, str], float], cell: int = 34) -> Chart | None:
    """A matrix ``values[(row, column)]`` (labels in insertion order); blue = -1, white = 0, red = 1 when a value
    is negative, else white = 0, red = 1. Every cell carries its value as a ``<title>`` tooltip and as text."""
    if not values:
        return None
    labels = list(dict.fromkeys([r for r, _ in values] + [c for _, c in values]))
    lo = -1.0 if any(v < 0 for v in values.values()) else 0.0  # nan < 0 is false
    n, pad = len(labels), 64
    size = pad + n * cell + 8

    def strength(v: float) -> float:  # -1 (blue) .. 0 (white) .. 1 (red)
        t = max(0.0, min(1.0, (v - lo) / (1.0 - lo)))
        return t * 2 - 1 if lo < 0 else t  # diverging (-1 .. 1) or sequential (0 .. 1) from white

    def colour(v: float) -> str:
        if math.isnan(v):
            return "#cccccc"
        t = strength(v)
        r, g, b = (255, int(255 * (1 - t)), int(255 * (1 - t))) if t >= 0 else (int(255 * (1 + t)),) * 2 + (255,)
        return f"#{r:02x}{g:02x}{b:02x}"

    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
            f'viewBox="0 0 {size} {size}" font-family="sans-serif" font-size="11" fill="#333">')]
    for i, label in enumerate(labels):
        y = pad + i * cell + cell / 2 + 4
        out.append(f'<text x="{pad - 4}" y="{y:.1f}" text-anchor="end">{escape(label)}</text>'
                   f'<text transform="translate({pad + i * cell + cell / 2 + 4:.1f} {pad - 4}) rotate(-90)">'
                   f"{escape(label)}</text>")
    for (row, col), v in values.items():
        x, y = pad + labels.index(col) * cell, pad + labels.index(row) * cell
        out.append(f'<rect class="mark" x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{colour(v)}" '
                   f'stroke="#fff"><title>{escape(row)} × {escape(col)}: {v:.3f}</title></rect>'
                   f'<text x="{x + cell / 2:.1f}" y="{y + cell / 2 + 4:.1f}" text-anchor="middle" font-size="9" '
                   f'fill="{"#fff" if abs(strength(v)) > 0.6 else "#333"}">{v:.2f}</text>')
    out.append("</svg>")
    return Chart("".join(out), size, size)


def compose(panels: list[tuple[str, Chart]], label: str, columns: int = 2) -> str:
    """Lay panels out in a grid, each under its title, as one standalone ``<svg>`` (``label`` is its
    accessible name)."""
    title_h, gap = 20, 12
    rows = [panels[i:i + columns] for i in range(0, len(panels), columns)]
    col_w = [max(c.width for row in rows for j, (_, c) in enumerate(row) if j == k) for k in range(len(rows[0]))]
    width = sum(col_w) + gap * (len(col_w) - 1)
    out, y = [], 0
    for row in rows:
        x = 0
        for k, (title, chart) in enumerate(row):
            if title:
                out.append(f'<text x="{x + 8}" y="{y + 14}" font-weight="bold">{escape(title)}</text>')
            out.append(f'<g transform="translate({x} {y + (title_h if title else 0)})">{chart.markup}</g>')
            x += col_w[k] + gap
        y += max(c.height for _, c in row) + (title_h if any(t for t, _ in row) else 0) + gap
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="figure" width="{width}" height="{y - gap}" '
            f'viewBox="0 0 {width} {y - gap}" role="img" aria-label="{escape(label)}" font-family="sans-serif" '
            f'font-size="11" fill="#333">{"".join(out)}</svg>')


def placeholder(text: str, width: int = 520, height: int = 60) -> str:
    """A standalone SVG that says why a figure has no data (Snakemake's report needs the file either way)."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13" fill="#777">'
            f'<text x="10" y="{height / 2 + 4}">{escape(text)}</text></svg>')
