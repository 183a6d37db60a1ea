"""A cell's history across runs, as data (points, environment changes) and as trend-chart geometry. Pure: no I/O.

A :class:`Series` is one cell identity (arch, variant, buffer size, every axis) over every run that measured it,
oldest first: per run each stage's median and range, the environment it ran in, the baseline range a nightly
judged it against and what regressed. :func:`chart` lays one stage out as SVG geometry: the medians, their
min–max range as an area, the baseline's range as a band, regressions as dots, and every environment change
as a labelled marker on the time axis, labels stacked in rows so that none overlaps another.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from lab.results.charts import fmt
from lab.results.report import Stat

# The environment fields whose change is marked on a trend (the cell's, and the run's lab version), with labels.
MARKED = (
    ("kernel_release", "kernel"),
    ("libc_version_run", "libc"),
    ("libc_version_build", "libc (build)"),
    ("qemu_version", "QEMU"),
    ("toolchain", "toolchain"),
    ("flags", "flags"),
    ("page_size", "page size"),
    ("host_cpu", "host CPU"),
    ("accel", "accel"),
    ("thp", "THP"),
    ("probe_schema", "probe schema"),
    ("lab_version", "lab"),
)
CHAR_W = 7.2  # the widest average advance of an 11px sans-serif label, per character (chromium's DejaVu Sans: 6.3-6.9)
VALUE_CHARS = 28  # a value's characters in a marker label (the whole value is the marker's tooltip)


@dataclass(frozen=True)
class Point:
    run_id: str
    started: float
    minor: Mapping[str, Stat]
    major: Mapping[str, Stat]
    env: Mapping[str, str]  # MARKED field -> value
    band: Mapping[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # (stage, counter) -> baseline range
    regressed: frozenset[tuple[str, str]] = frozenset()  # (stage, counter) that regressed against it
    nightly: bool = False


@dataclass(frozen=True)
class Change:
    index: int  # the point at which the environment changed
    fields: tuple[tuple[str, str, str], ...]  # (label, old value, new value)

    @property
    def label(self) -> str:
        return ", ".join(f"{name} {_short(new)}" for name, _, new in self.fields)

    @property
    def title(self) -> str:
        return "; ".join(f"{name}: {old or '(none)'} → {new or '(none)'}" for name, old, new in self.fields)


def _short(value: str) -> str:
    m = re.match(r"QEMU emulator version (\S+)", value)
    value = m.group(1) if m else value
    return value if len(value) <= VALUE_CHARS else value[: VALUE_CHARS - 1] + "…"


@dataclass(frozen=True)
class Series:
    arch: str
    variant: str
    buffer_size: int
    axes: str  # absolute (every axis's value)
    name: str  # as comparisons name it (arch/variant/size[/shown axes])
    points: tuple[Point, ...]

    @property
    def slug(self) -> str:
        """A file name for the cell's page: readable, and unique by a digest of the whole identity."""
        return slug(self.arch, self.variant, self.buffer_size, self.axes)

    def changes(self) -> list[Change]:
        out = []
        for i in range(1, len(self.points)):
            a, b = self.points[i - 1].env, self.points[i].env
            diff = tuple((label, a.get(k, ""), b.get(k, "")) for k, label in MARKED if a.get(k, "") != b.get(k, ""))
            if diff:
                out.append(Change(i, diff))
        return out

    def stages(self) -> list[str]:
        seen: dict[str, None] = {}
        for p in self.points:
            seen.update(dict.fromkeys(p.minor))
        return list(seen)


def slug(arch: str, variant: str, buffer_size: int, axes: str) -> str:
    """A cell's page name (without .html): readable, and unique by a digest of the whole identity."""
    digest = hashlib.sha256(f"{arch}\0{variant}\0{buffer_size}\0{axes}".encode()).hexdigest()[:10]
    return f"{arch}-{variant}-{buffer_size}-{digest}"


def day(t: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """Round values spanning [lo, hi] (about ``n`` of them)."""
    span = hi - lo
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def place_labels(items: list[tuple[float, str]], width: float, gap: float = 8.0) -> list[tuple[int, float, str, float, float]]:
    """(row, x, anchor, left, right) for each (marker x, text): a label starts right of its marker (or ends left of
    it near the right edge) in the first row where it overlaps no other label."""
    rows: list[list[tuple[float, float]]] = []
    out = []
    for x, text in items:
        w = len(text) * CHAR_W + 4
        left, anchor = (x + 3, "start") if x + 3 + w <= width else (x - 3 - w, "end")
        left = max(0.0, left)
        right = left + w
        row = next((i for i, used in enumerate(rows) if all(right + gap <= a or left >= b + gap for a, b in used)), len(rows))
        if row == len(rows):
            rows.append([])
        rows[row].append((left, right))
        out.append((row, left if anchor == "start" else right, anchor, left, right))
    return out


def chart(series: Series, stage: str, counter: str = "minflt", width: int = 900, plot_h: int = 150) -> dict[str, object]:
    """One stage's trend as SVG geometry (see the module's docstring); x is the run's start time."""
    pts: list[tuple[Point, Stat]] = []
    for p in series.points:
        if (st := (p.minor if counter == "minflt" else p.major).get(stage)) is not None:
            pts.append((p, st))
    changes = series.changes()
    left_w, right_pad, row_h = 56, 12, 15
    plot_w = width - left_w - right_pad
    t0, t1 = series.points[0].started, series.points[-1].started
    tspan = (t1 - t0) or 1.0

    def x_of(t: float) -> float:
        return left_w + (plot_w / 2 if t1 == t0 else (t - t0) / tspan * plot_w)

    labels = place_labels([(x_of(series.points[c.index].started), c.label) for c in changes], width)
    top = 8 + row_h * (max((r for r, *_ in labels), default=-1) + 1) + 6
    values = [v for _, s in pts for v in (s.min, s.max)]
    values += [v for p, _ in pts for v in p.band.get((stage, counter), ())]
    lo, hi = (float(min(values)), float(max(values))) if values else (0.0, 1.0)
    if hi - lo < 2:
        lo, hi = lo - 1, hi + 1
    pad = (hi - lo) * 0.08
    lo, hi = lo - pad, hi + pad

    def y_of(v: float) -> float:
        return top + plot_h - (v - lo) / (hi - lo) * plot_h

    xy = [(x_of(p.started), s) for p, s in pts]
    median = " ".join(f"{x:.1f},{y_of(s.median):.1f}" for x, s in xy)
    upper = [f"{x:.1f},{y_of(s.max):.1f}" for x, s in xy]
    lower = [f"{x:.1f},{y_of(s.min):.1f}" for x, s in reversed(xy)]
    # Each judged point's band reaches halfway to its neighbours (the plot's edge at either end); consecutive
    # points judged against the same range form one band.
    xs = [x_of(p.started) for p, _ in pts]
    edges = [left_w, *((a + b) / 2 for a, b in itertools.pairwise(xs)), left_w + plot_w]
    bands: list[dict[str, object]] = []
    start: tuple[int, tuple[int, int]] | None = None
    for i, rng in enumerate([*(p.band.get((stage, counter)) for p, _ in pts), None]):
        if start is not None and rng != start[1]:
            b = start[1]
            bands.append({"x": edges[start[0]], "w": max(2.0, edges[i] - edges[start[0]]), "y": y_of(b[1]),
                          "h": max(1.5, y_of(b[0]) - y_of(b[1])), "range": f"{b[0]}–{b[1]}"})  # fmt: skip
            start = None
        if start is None and rng is not None:
            start = (i, rng)
    dots = [
        {
            "x": x_of(p.started),
            "y": y_of(s.median),
            "run": p.run_id,
            "title": f"{day(p.started)} run {p.run_id}: {fmt(s.median)} ({s.min}–{s.max})",
        }
        for p, s in pts
    ]
    regressions = [d for d, (p, _) in zip(dots, pts, strict=True) if (stage, counter) in p.regressed]
    markers = [
        {"x": x_of(series.points[c.index].started), "row_y": 8 + row_h * row + 11, "text_x": tx, "anchor": anchor, "label": c.label,
         "title": f"{day(series.points[c.index].started)} run {series.points[c.index].run_id}: {c.title}"}
        for c, (row, tx, anchor, _, _) in zip(changes, labels, strict=True)
    ]  # fmt: skip
    when = "%Y-%m-%d" if tspan >= 2 * 86400 else "%m-%d %H:%M"  # days apart, or runs of one day
    x_ticks, last_right, tick_w, said = [], -1e9, 11 * CHAR_W, ""
    for k in range(6 if t1 != t0 else 1):
        t = t0 + tspan * k / 5
        x = x_of(t)
        anchor = "middle" if t1 == t0 else "start" if k == 0 else "end" if k == 5 else "middle"
        left = {"start": x, "middle": x - tick_w / 2, "end": x - tick_w}[anchor]
        label = time.strftime(when, time.gmtime(t))
        if left >= last_right + 8 and label != said:
            x_ticks.append({"x": x, "label": label, "anchor": anchor})
            last_right, said = left + tick_w, label
    y_ticks = [{"y": y_of(v), "label": fmt(v)} for v in _ticks(lo, hi) if lo <= v <= hi]
    return {
        "width": width,
        "height": top + plot_h + 24,
        "plot": {"x": left_w, "y": top, "w": plot_w, "h": plot_h},
        "median": median,
        "area": " ".join(upper + lower),
        "bands": bands,
        "dots": dots if len(dots) <= 60 else [],
        "regressions": regressions,
        "markers": markers,
        "x_ticks": x_ticks,
        "y_ticks": y_ticks,
        "stage": stage,
        "counter": counter,
    }
