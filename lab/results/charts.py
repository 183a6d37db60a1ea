"""The report's charts: SVG geometry computed from a report's cells (no drawing library, no I/O)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab.config import STAGES

if TYPE_CHECKING:
    from lab.results.report import Report

STAGE_COLOURS = ("#4e79a7", "#bab0ac", "#f28e2b", "#59a14f", "#76b7b2", "#edc948", "#e15759")


def sparkline(values: list[float], width: int = 120, height: int = 24) -> str:
    """SVG polyline points for a trend (empty when there is nothing to draw)."""
    if len(values) < 2:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    step = width / (len(values) - 1)
    return " ".join(f"{i * step:.1f},{height - 2 - (v - lo) / span * (height - 4):.1f}" for i, v in enumerate(values))


def fmt(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.1f}"


def bar_chart(report: Report, size: int, width: int = 640, bar: int = 16) -> dict[str, object]:
    """Geometry of the start-up (entry) bar chart: one bar per cell, grouped by arch."""
    cells = [c for c in report.cells if c.cell.buffer_size == size]
    top = max((c.minor["entry"].max for c in cells if "entry" in c.minor), default=1) or 1
    label_w, rows, y = 170, [], 0
    for c in cells:
        if "entry" not in c.minor:
            continue
        st = c.minor["entry"]
        scale = (width - label_w - 60) / top
        rows.append(
            {
                "y": y,
                "label": c.name,
                "w": st.median * scale,
                "x0": label_w + st.min * scale,
                "x1": label_w + st.max * scale,
                "value": fmt(st.median),
            }
        )
        y += bar + 6
    return {"width": width, "height": y + 4, "label_w": label_w, "bar": bar, "rows": rows}


def stacked_chart(report: Report, size: int, width: int = 640, bar: int = 16) -> dict[str, object]:
    """Geometry of the per-cell stacked minor faults by stage (log-free: touch1 dominates by design)."""
    cells = [c for c in report.cells if c.cell.buffer_size == size]
    total = max((sum(s.median for s in c.minor.values()) for c in cells), default=1) or 1
    label_w, rows, y = 170, [], 0
    scale = (width - label_w - 60) / total
    for c in cells:
        x, parts = float(label_w), []
        for stage, colour in zip(STAGES, STAGE_COLOURS, strict=True):
            if stage in c.minor and c.minor[stage].median > 0:
                w = c.minor[stage].median * scale
                parts.append({"x": x, "w": w, "colour": colour, "stage": stage, "value": fmt(c.minor[stage].median)})
                x += w
        rows.append({"y": y, "label": c.name, "parts": parts, "total": fmt(sum(s.median for s in c.minor.values()))})
        y += bar + 6
    return {
        "width": width,
        "height": y + 4,
        "label_w": label_w,
        "bar": bar,
        "rows": rows,
        "legend": list(zip(STAGES, STAGE_COLOURS, strict=True)),
    }
