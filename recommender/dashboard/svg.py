"""Inline SVG charts as strings, for the static report: no scripts, no external assets, so
the file opens anywhere (mail attachment, CI artifact) and prints as it looks.

Every data element has class ``mark`` like on the live page.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

COLORS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2")


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"


def compact(value: float) -> str:
    """Axis labels: 39995 -> "40k", 0.5 -> "0.5"."""
    if abs(value) >= 1e6:
        return f"{value / 1e6:.3g}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.3g}k"
    return f"{value:.3g}"


def hbars(title: str, values: list[tuple[str, float | None]], note: str = "",
          best: str | None = None, width: int = 320) -> str:
    """Horizontal bars, one per (label, value), on a common zero-based scale."""
    row, left, right = 22, 90, width - 60
    top = 34 if note else 22
    height = top + row * len(values) + 6
    peak = max((v for _, v in values if v is not None), default=0.0) or 1.0
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img">',
             f'<text x="0" y="14" class="title">{escape(title)}</text>']
    if note:
        parts.append(f'<text x="0" y="28" class="note">{escape(note)}</text>')
    for i, (label, value) in enumerate(values):
        y = top + i * row
        color = COLORS[i % len(COLORS)]
        bar = 0.0 if value is None else max(value, 0.0) / peak * (right - left)
        weight = ' font-weight="bold"' if label == best else ""
        parts += [f'<text x="{left - 6}" y="{y + 14}" text-anchor="end"{weight}>'
                  f'{escape(label)}</text>',
                  f'<rect class="mark" x="{left}" y="{y + 3}" width="{bar:.1f}" '
                  f'height="{row - 6}" fill="{color}"><title>{escape(label)}: {fmt(value)}'
                  '</title></rect>',
                  f'<text x="{left + bar + 4:.1f}" y="{y + 14}">{fmt(value)}</text>']
    parts.append("</svg>")
    return "".join(parts)


def timeline(title: str, points: list[tuple[int, float | None]], width: int = 640,
             height: int = 200, unit: str = "") -> str:
    """A line over epoch-ms x values, zero-based y, with start/middle/end time labels."""
    left, right, top, bottom = 48, 10, 24, 22
    values = [(t, v) for t, v in points if v is not None]
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img">',
             f'<text x="0" y="14" class="title">{escape(title)}</text>']
    if not values:
        parts += [f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data'
                  '</text>', "</svg>"]
        return "".join(parts)
    t0, t1 = values[0][0], values[-1][0]
    peak = max(v for _, v in values) or 1.0
    pw, ph = width - left - right, height - top - bottom

    def x(t: int) -> float:
        return left + (pw * (t - t0) / (t1 - t0) if t1 > t0 else pw / 2)

    def y(v: float) -> float:
        return top + ph * (1 - v / peak)

    for frac in (0.0, 0.5, 1.0):
        parts += [f'<line x1="{left}" x2="{width - right}" y1="{y(peak * frac):.1f}" '
                  f'y2="{y(peak * frac):.1f}" class="grid"/>',
                  f'<text x="{left - 4}" y="{y(peak * frac) + 3:.1f}" text-anchor="end">'
                  f'{compact(peak * frac)}{escape(unit)}</text>']
    path = "M" + "L".join(f"{x(t):.1f},{y(v):.1f}" for t, v in values)
    parts.append(f'<path class="mark" d="{path}" fill="none" stroke="{COLORS[0]}" '
                 f'stroke-width="1.5"><title>{escape(title)}</title></path>')
    for t, anchor in ((t0, "start"), ((t0 + t1) // 2, "middle"), (t1, "end")):
        label = datetime.fromtimestamp(t / 1000, UTC).strftime("%H:%M")
        parts.append(f'<text x="{x(t):.1f}" y="{height - 6}" text-anchor="{anchor}">'
                     f'{label}</text>')
    parts.append("</svg>")
    return "".join(parts)
