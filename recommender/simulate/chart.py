"""The A/B report as one self-contained SVG file: a panel per session metric, a bar per policy
at its mean with the 95 % interval as a whisker, and random's mean as a dashed line, so
"does the interval clear random" is visible at a glance. No scripts, fonts or external files.
"""

from __future__ import annotations

from html import escape

from recommender.dashboard.svg import COLORS, fmt
from recommender.simulate.ab import LABELS, METRICS, AbReport
from recommender.simulate.confidence import Estimate
from recommender.simulate.policies import REFERENCE

PANEL_W, ROW, LABEL_W, VALUE_W, HEAD = 380, 26, 120, 64, 24
COLUMNS = 2
STYLE = ("text{font:12px sans-serif;fill:#222}.title{font-weight:bold}.note{fill:#666}"
         ".whisker{stroke:#222;stroke-width:1.5}.reference{stroke:#888;stroke-dasharray:4 3}")


def render(report: AbReport) -> str:
    """The whole chart as an SVG document."""
    rows = [(p.name, p.metrics) for p in report.policies]
    panel_h = HEAD + ROW * len(rows) + 8
    top = 48
    n_rows = -(-len(METRICS) // COLUMNS)
    width, height = PANEL_W * COLUMNS, top + panel_h * n_rows
    reference = next(m for name, m in rows if name == REFERENCE)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img"><style>{STYLE}</style>',
             f'<text x="8" y="18" class="title">A/B simulation: {report.users} users, '
             f'CURRENT model {escape(report.current_version)}</text>',
             f'<text x="8" y="36" class="note">{escape(_note(report))}</text>']
    for i, metric in enumerate(METRICS):
        x, y = PANEL_W * (i % COLUMNS), top + panel_h * (i // COLUMNS)
        parts.append(_panel(metric, [(name, m[metric]) for name, m in rows],
                            reference[metric].mean, x, y))
    parts.append("</svg>")
    return "".join(parts)


def _note(report: AbReport) -> str:
    rules = report.rules
    return (f"{report.ci_method}; drop-off after {rules.patience} unliked movies in a row "
            f"(max {rules.max_length}); liked = held-out rating >= {rules.like_threshold:g}")


def _panel(metric: str, rows: list[tuple[str, Estimate]], reference: float | None,
           x: int, y: int) -> str:
    """One metric: bars at the means, whiskers over the intervals, random's mean dashed."""
    span = PANEL_W - LABEL_W - VALUE_W - 8
    peak = max((e.high or e.mean or 0.0 for _, e in rows), default=0.0) or 1.0

    def at(value: float) -> float:
        return LABEL_W + max(value, 0.0) / peak * span

    parts = [f'<g transform="translate({x},{y})">',
             f'<text x="8" y="16" class="title">{escape(LABELS[metric])}</text>']
    for i, (name, est) in enumerate(rows):
        top = HEAD + i * ROW
        parts.append(f'<text x="{LABEL_W - 6}" y="{top + 16}" text-anchor="end">'
                     f'{escape(name)}</text>')
        if est.mean is None:
            parts.append(f'<text x="{LABEL_W}" y="{top + 16}" class="note">no data</text>')
            continue
        parts.append(f'<rect x="{LABEL_W}" y="{top + 4}" width="{at(est.mean) - LABEL_W:.1f}" '
                     f'height="{ROW - 8}" fill="{COLORS[i % len(COLORS)]}"><title>'
                     f'{escape(name)}: {fmt(est.mean)} [{fmt(est.low)}, {fmt(est.high)}]'
                     '</title></rect>')
        if est.low is not None and est.high is not None:
            mid, lo, hi = top + ROW / 2, at(est.low), at(est.high)
            parts.append(f'<path class="whisker" d="M{lo:.1f} {mid}H{hi:.1f}M{lo:.1f} '
                         f'{mid - 5}V{mid + 5}M{hi:.1f} {mid - 5}V{mid + 5}"/>')
        parts.append(f'<text x="{at(est.high or est.mean) + 6:.1f}" y="{top + 16}">'
                     f'{fmt(est.mean)}</text>')
    if reference is not None:
        ref_x = at(reference)
        parts.append(f'<line class="reference" x1="{ref_x:.1f}" y1="{HEAD}" x2="{ref_x:.1f}" '
                     f'y2="{HEAD + ROW * len(rows)}"/>')
    parts.append("</g>")
    return "".join(parts)
