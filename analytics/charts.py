"""Charts drawn on the server as SVG: readable at a glance, every bar labelled with its value, and
no chart library shipped to the browser."""
from __future__ import annotations

from datetime import date

from markupsafe import Markup, escape

# One colour per channel, distinguishable by people with the common colour-vision deficiencies.
PALETTE = ["#0f766e", "#d97706", "#2563eb", "#be185d", "#65a30d", "#7c3aed", "#0891b2", "#a16207"]


def _nice_max(value: float) -> int:
    if value <= 5:
        return 5
    for step in (10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000):
        if value <= step:
            return step
    return int(-(-value // 10000) * 10000)


def stacked_days(days: list[date], series: dict[str, list[int]], title: str, element_id: str) -> Markup:
    """Columns per day, stacked by channel, with a legend and the day's total above each column."""
    width, height, left, bottom, top = 760, 260, 40, 40, 24
    plot_w, plot_h = width - left - 10, height - bottom - top
    totals = [sum(values[i] for values in series.values()) for i in range(len(days))]
    peak = _nice_max(max(totals, default=0))
    slot = plot_w / max(len(days), 1)
    bar = max(slot * 0.7, 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{escape(element_id)}" viewBox="0 0 {width} '
           f'{height + 20 * ((len(series) + 3) // 4)}" role="img" aria-label="{escape(title)}" direction="ltr" '
           f'font-family="sans-serif" font-size="11">', f"<title>{escape(title)}</title>"]
    for tick in range(0, 5):
        value = peak * tick / 4
        y = top + plot_h - plot_h * tick / 4
        out.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e2e8f0"/>'
                   f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#64748b">{value:g}</text>')
    every = max(1, round(len(days) / 10))
    for i, day in enumerate(days):
        x = left + i * slot + (slot - bar) / 2
        y = top + plot_h
        for (channel, values), colour in zip(series.items(), PALETTE * 4):
            if values[i]:
                h = plot_h * values[i] / peak
                y -= h
                out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colour}">'
                           f'<title>{day.isoformat()} {escape(channel)}: {values[i]}</title></rect>')
        if totals[i] and len(days) <= 45:
            out.append(f'<text x="{x + bar / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle" '
                       f'class="total">{totals[i]}</text>')
        if i % every == 0:
            out.append(f'<text x="{x + bar / 2:.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
                       f'fill="#64748b">{day.strftime("%d/%m")}</text>')
    for k, (channel, colour) in enumerate(zip(series, PALETTE * 4)):
        x, y = left + (k % 4) * 170, height + 20 * (k // 4)
        out.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{x + 14}" y="{y}" class="legend">{escape(channel)} ({sum(series[channel])})</text>')
    out.append("</svg>")
    return Markup("".join(out))


def bars(items: list[tuple[str, float]], title: str, element_id: str, fmt: str = "{:g}",
         colour: str = "#0f766e") -> Markup:
    """Horizontal bars, largest first as given, each labelled with its value."""
    if not items:
        return Markup("")
    row, left, width = 24, 190, 560
    peak = max((v for _, v in items), default=0) or 1
    height = row * len(items) + 8
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart bars" id="{escape(element_id)}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" direction="ltr" '
           f'font-family="sans-serif" font-size="12">', f"<title>{escape(title)}</title>"]
    for i, (label, value) in enumerate(items):
        y = 4 + i * row
        w = (width - left - 70) * value / peak
        out.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end">{escape(label)}</text>'
                   f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" rx="3" fill="{colour}"/>'
                   f'<text x="{left + w + 6:.1f}" y="{y + 15}" class="value">{escape(fmt.format(value))}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def share(value: float | None, element_id: str, good_high: bool = True) -> Markup:
    """A single rate as a full-width bar (teal when a high value is good, amber when it is not)."""
    if value is None:
        return Markup("")
    colour = "#0f766e" if good_high else "#d97706"
    return Markup(f'<svg xmlns="http://www.w3.org/2000/svg" class="share" id="{escape(element_id)}" '
                  f'viewBox="0 0 200 12" role="img" aria-label="{value:.0%}">'
                  f'<rect width="200" height="12" rx="6" fill="#e2e8f0"/>'
                  f'<rect width="{200 * value:.1f}" height="12" rx="6" fill="{colour}"/></svg>')
