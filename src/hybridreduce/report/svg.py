"""Small inline-SVG charts, so the report needs no JavaScript, CDN or plotting dependency."""

from __future__ import annotations

from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def line_chart(
    series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str, width: int = 520, height: int = 300
) -> str:
    """One polyline with point markers per series; each marker carries a ``<title>`` tooltip with its value."""
    points = [p for pts in series.values() for p in pts]
    if not points:
        return ""
    pad_l, pad_r, pad_t, pad_b = 56, 160, 14, 42
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(0.0, min(ys)), max(ys) * 1.05 or 1.0
    x1 = x1 if x1 > x0 else x0 + 1

    def sx(x):
        return pad_l + (x - x0) / (x1 - x0) * (width - pad_l - pad_r)

    def sy(y):
        return height - pad_b - (y - y0) / (y1 - y0) * (height - pad_t - pad_b)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{escape(ylabel)} vs {escape(xlabel)}" class="chart">']
    for i in range(5):  # y grid and ticks
        y = y0 + (y1 - y0) * i / 4
        out.append(f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" class="grid"/>'
                   f'<text x="{pad_l - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.2g}</text>')
    distinct = sorted(set(xs))
    # one tick per value when they are few and apart, else five evenly spaced ticks (no overlapping labels)
    spread = min((b - a for a, b in zip(distinct, distinct[1:])), default=x1 - x0) / (x1 - x0)
    ticks = distinct if len(distinct) <= 6 and spread > 0.08 else [x0 + (x1 - x0) * i / 4 for i in range(5)]
    for x in ticks:
        out.append(f'<text x="{sx(x):.1f}" y="{height - pad_b + 16}" text-anchor="middle">{x:.3g}</text>')
    out.append(f'<text x="{(pad_l + width - pad_r) / 2}" y="{height - 6}" text-anchor="middle">{escape(xlabel)}</text>')
    out.append(f'<text transform="translate(14 {(height - pad_b) / 2}) rotate(-90)" text-anchor="middle">'
               f"{escape(ylabel)}</text>")
    for i, (name, pts) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        pts = sorted(pts)
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in pts:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="{colour}">'
                       f"<title>{escape(name)}: {xlabel}={x:g}, {ylabel}={y:.4g}</title></circle>")
        ly = pad_t + 14 + 18 * i
        out.append(f'<rect x="{width - pad_r + 12}" y="{ly - 9}" width="12" height="4" fill="{colour}"/>'
                   f'<text x="{width - pad_r + 30}" y="{ly - 4}">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def heatmap(labels: list[str], values: dict[tuple[int, int], float], title: str, cell: int = 34,
            lo: float = -1.0, hi: float = 1.0) -> str:
    """A square matrix ``values[(i, j)]`` over ``labels`` (blue = ``lo``, white = middle, red = ``hi``); every
    cell carries its value as a ``<title>`` tooltip and as text."""
    if not labels:
        return ""
    n, pad = len(labels), 64
    size = pad + n * cell + 8

    def colour(v: float) -> str:
        if v != v:  # nan
            return "#cccccc"
        t = max(0.0, min(1.0, (v - lo) / (hi - lo))) * 2 - 1  # -1 .. 1
        r, g, b = (255, int(255 * (1 - t)), int(255 * (1 - t))) if t >= 0 else (int(255 * (1 + t)),) * 2 + (255,)
        return f"#{r:02x}{g:02x}{b:02x}"

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size + 18}" role="img" '
           f'aria-label="{escape(title)}" class="chart">',
           f'<text x="{pad}" y="12">{escape(title)}</text>']
    for i, label in enumerate(labels):
        y = 18 + pad + i * cell
        out.append(f'<text x="{pad - 4}" y="{y + cell / 2 + 4:.1f}" text-anchor="end">{escape(label)}</text>')
        out.append(f'<text transform="translate({pad + i * cell + cell / 2 + 4:.1f} {18 + pad - 4}) rotate(-90)">'
                   f"{escape(label)}</text>")
        for j in range(n):
            v = values.get((i, j), float("nan"))
            x = pad + j * cell
            out.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{colour(v)}" stroke="#fff">'
                       f"<title>{escape(labels[i])} × {escape(labels[j])}: {v:.3f}</title></rect>"
                       f'<text x="{x + cell / 2:.1f}" y="{y + cell / 2 + 4:.1f}" text-anchor="middle" '
                       f'class="cell">{v:.2f}</text>')
    out.append("</svg>")
    return "".join(out)
