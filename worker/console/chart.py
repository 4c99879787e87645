"""The overview's chart: delivered / retried / dead-lettered per minute as an inline SVG.

Drawn on the server (no script, no chart library): colours are SVG attributes, not
``style``, which the Content-Security-Policy forbids inline.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from markupsafe import Markup, escape

SERIES = (("delivered", "#2e7d32"), ("retried", "#f9a825"), ("dead_lettered", "#c62828"))
WIDTH, HEIGHT, PAD = 720, 200, 30


def svg(points: Sequence[dict[str, Any]]) -> Markup:
    """A line per series over the minutes given (oldest first); every number escaped."""
    if not points:
        return Markup('<p class="muted">no data</p>')
    top = max(1, *(int(p.get(name, 0)) for p in points for name, _ in SERIES))
    step = (WIDTH - 2 * PAD) / max(len(points) - 1, 1)

    def y(value: int) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD) * value / top

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        'aria-label="events per minute over the last hour" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
        'stroke="#999" stroke-width="1"/>',
        f'<text x="2" y="{PAD}" font-size="11" fill="#555">{top}</text>',
        f'<text x="2" y="{HEIGHT - PAD}" font-size="11" fill="#555">0</text>',
        f'<text x="{PAD}" y="{HEIGHT - 8}" font-size="11" fill="#555">'
        f"{_minute(points[0].get('minute'))}</text>",
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 8}" font-size="11" fill="#555" '
        f'text-anchor="end">{_minute(points[-1].get("minute"))}</text>',
    ]
    for index, (name, colour) in enumerate(SERIES):
        coords = " ".join(
            f"{PAD + i * step:.1f},{y(int(p.get(name, 0))):.1f}" for i, p in enumerate(points)
        )
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2">'
            f"<title>{escape(name)}</title></polyline>"
        )
        parts.append(
            f'<text x="{PAD + 10 + index * 130}" y="14" font-size="12" fill="{colour}">'
            f"{escape(name.replace('_', '-'))} {sum(int(p.get(name, 0)) for p in points)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _minute(epoch: object) -> str:
    if not isinstance(epoch, (int, float)):
        return ""
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%H:%MZ")
