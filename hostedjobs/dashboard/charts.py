"""Server-rendered SVG charts of the run history: no script, no library, no inline style.

A chart is a stacked bar per bin (succeeded, retried, failed, cancelled) in an SVG stretched
to its box (``preserveAspectRatio="none"``), so it fills any width from a phone's up; the
axis labels and the legend are HTML around it, so their text never shrinks with the SVG.
Colours come from classes in dashboard.css (the CSP allows no inline styles). Each bar
carries a ``<title>`` (its tooltip), the SVG a title and description, and a table of the
non-empty bins follows for screen readers and copying.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from markupsafe import Markup, escape

from ..history import HistoryPoint

__all__ = ["history_chart", "nice_ceiling"]

_SERIES = (
    ("succeeded", "succeeded"),
    ("retried", "retried"),
    ("failed", "failed"),
    ("cancelled", "cancelled"),
)
"""(HistoryPoint field, label), bottom of the stack first."""

_BIN_W = 10
_BAR_W = 8
_HEIGHT = 100
_X_LABELS = 5


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value`` (1 for 0)."""
    if value <= 1:
        return 1
    power: int = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # pragma: no cover - the loop ends at 10 * power


def _counts(point: HistoryPoint) -> str:
    return ", ".join(f"{getattr(point, field)} {label}" for field, label in _SERIES)


def history_chart(points: Sequence[HistoryPoint], *, chart_id: str, label: str) -> Markup:
    """An HTML figure of ``points`` (one bar per bin, oldest first, the last one the
    current bin); ``chart_id`` prefixes its element ids, ``label`` names it for assistive
    technology (e.g. "Runs in the last hour, by minute")."""
    cid = escape(chart_id)
    top = nice_ceiling(max((p.total for p in points), default=0))
    width = max(len(points), 1) * _BIN_W
    totals = {field: sum(getattr(p, field) for p in points) for field, _ in _SERIES}
    summary = ", ".join(f"{totals[field]} {name}" for field, name in _SERIES)
    bars: list[str] = []
    for i, point in enumerate(points):
        if not point.total:
            continue
        x = i * _BIN_W + (_BIN_W - _BAR_W) / 2
        y = float(_HEIGHT)
        rects: list[str] = []
        for field, _ in _SERIES:
            count = getattr(point, field)
            if not count:
                continue
            h = count / top * _HEIGHT
            y -= h
            rects.append(
                f'<rect class="bar-{field}" x="{x:.1f}" y="{y:.2f}" '
                f'width="{_BAR_W}" height="{h:.2f}"/>'
            )
        when = point.start.strftime("%H:%M")
        bars.append(f"<g><title>{when} UTC: {escape(_counts(point))}</title>{''.join(rects)}</g>")
    grid = "".join(
        f'<line class="grid" x1="0" x2="{width}" y1="{y}" y2="{y}"/>'
        for y in (0, _HEIGHT / 2, _HEIGHT)
    )
    svg = (
        f'<svg class="chart-svg" viewBox="0 0 {width} {_HEIGHT}" preserveAspectRatio="none" '
        f'role="img" aria-labelledby="{cid}-title {cid}-desc">'
        f'<title id="{cid}-title">{escape(label)}</title>'
        f'<desc id="{cid}-desc">{escape(summary)}; the tallest bar is at most {top} runs.</desc>'
        f"{grid}{''.join(bars)}</svg>"
    )
    legend = "".join(
        f'<li><span class="swatch bar-{field}" aria-hidden="true"></span>{name} '
        f'<strong id="{cid}-{field}">{totals[field]}</strong></li>'
        for field, name in _SERIES
    )
    y_axis = (
        f'<div class="chart-y" aria-hidden="true"><span>{top}</span>'
        f"<span>{top / 2:g}</span><span>0</span></div>"
    )
    x_axis = (
        '<div class="chart-x" aria-hidden="true">'
        + "".join(f"<span>{escape(t)}</span>" for t in _x_labels(points))
        + "</div>"
    )
    rows = "".join(
        f"<tr><td>{p.start.strftime('%Y-%m-%d %H:%M')}</td>"
        + "".join(f"<td>{getattr(p, field)}</td>" for field, _ in _SERIES)
        + "</tr>"
        for p in points
        if p.total
    )
    head = "".join(f"<th>{name}</th>" for _, name in _SERIES)
    table = (
        f'<details class="chart-table"><summary>As a table</summary>'
        f'<div class="scroll"><table><thead><tr><th>From (UTC)</th>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div></details>"
        if rows
        else '<p class="muted small">No runs in this window.</p>'
    )
    return Markup(
        f'<figure class="chart" id="{cid}"><ul class="legend">{legend}</ul>'
        f'<div class="chart-plot">{y_axis}{svg}</div>{x_axis}{table}</figure>'
    )


def _x_labels(points: Sequence[HistoryPoint]) -> list[str]:
    """Evenly spaced bin starts (UTC ``HH:MM``), then "now" for the window's end."""
    if not points:
        return []
    step = len(points) / (_X_LABELS - 1)
    labels = [points[min(round(i * step), len(points) - 1)].start for i in range(_X_LABELS - 1)]
    return [*(t.strftime("%H:%M") for t in labels), "now"]
