"""A trend line as server-rendered SVG: no script, readable in any browser and in a printout.

Time runs left to right in both languages (as on the hospital's printed reports); the labels are
the periods' first days. A period with no score leaves a gap in the line rather than a zero."""
from __future__ import annotations

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 24, 40


def _fmt(value: float) -> str:
    return f"{value:g}"


def line_chart(points: list[tuple[str, float | None]], *, low: float, high: float, title: str,
               ticks: list[float], color: str = "#0f766e") -> Markup:
    """An SVG line chart of (label, value) points on a fixed [low, high] scale."""
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    count = max(len(points), 1)

    def x(i: int) -> float:
        return LEFT + (inner_w * (i + 0.5) / count)

    def y(value: float) -> float:
        return TOP + inner_h * (high - value) / (high - low)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
             f'aria-label="{escape(title)}" direction="ltr" class="trend">',
             f'<title>{escape(title)}</title>',
             f'<text x="{LEFT}" y="14" font-size="13" font-weight="700">{escape(title)}</text>']
    for tick in ticks:
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                     f'stroke="{"#94a3b8" if tick == 0 else "#e2e8f0"}"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" font-size="11" text-anchor="end">{_fmt(tick)}</text>')
    every = max(1, len(points) // 8)
    for i, (label, _) in enumerate(points):
        if i % every == 0:
            parts.append(f'<text x="{x(i):.1f}" y="{HEIGHT - BOTTOM + 16}" font-size="10" text-anchor="middle">'
                         f'{escape(label)}</text>')
    segment: list[str] = []
    segments: list[list[str]] = []
    for i, (_, value) in enumerate(points):
        if value is None:
            if segment:
                segments.append(segment)
            segment = []
            continue
        segment.append(f"{x(i):.1f},{y(value):.1f}")
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(value):.1f}" r="3.5" fill="{color}" class="point" '
                     f'data-value="{_fmt(value)}"><title>{escape(points[i][0])}: {_fmt(value)}</title></circle>')
    if segment:
        segments.append(segment)
    for line in segments:
        if len(line) > 1:
            parts.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="{color}" stroke-width="2"/>')
    if not any(v is not None for _, v in points):
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" font-size="12" text-anchor="middle" '
                     f'fill="#64748b">—</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
