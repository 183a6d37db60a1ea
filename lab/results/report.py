"""Reports of a run: one data model from the store, rendered as HTML, Markdown or JSON.

The numbers come from the store only (medians and ranges over the repeats of
each cell), so the report always equals the store. HTML is one self-contained
file (inline CSS and SVG, no network); templates use autoescape and
StrictUndefined.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import re
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import jinja2

from lab import axes as axes_mod
from lab.config import STAGES
from lab.files import write_atomic
from lab.payloads import variants
from lab.results import across, explained
from lab.results.charts import STAGE_COLOURS, bar_chart, fmt, sparkline, stacked_chart
from lab.results.compare import Comparison
from lab.results.store import Cell, CellError, RunMeta, Sample, Store
from lab.text import size_text

FORMATS = ("html", "md", "json")
SCHEMA, SCHEMA_VERSION = "lab.report", 1  # of the JSON form: bump the version when a field changes meaning or goes
TREND_RUNS = 20
TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class Stat:
    median: float
    min: int
    max: int
    n: int

    @classmethod
    def of(cls, values: list[int]) -> Stat:
        return cls(float(statistics.median(values)), min(values), max(values), len(values))

    @property
    def spread(self) -> int:
        return self.max - self.min


def row_of(cell: Cell | CellError) -> str:
    """A report row: the arch, and the cell's axes that are not the table's defaults (``arm64 [suite=forky]``)."""
    shown = axes_mod.shown(cell.axes)
    return f"{cell.arch} [{shown}]" if shown else cell.arch


@dataclass(frozen=True)
class CellView:
    cell: Cell
    minor: dict[str, Stat]  # stage -> delta minflt over repeats
    major: dict[str, Stat]

    @property
    def row(self) -> str:
        return row_of(self.cell)

    @property
    def name(self) -> str:
        return f"{self.row} {self.cell.variant}"

    @property
    def mixed_libc(self) -> bool:
        """Built against one libc version and run on another: the cell is not one libc (flagged in the report)."""
        return self.cell.libc_version_build != self.cell.libc_version_run

    @property
    def pages(self) -> int:
        return self.cell.buffer_size // self.cell.page_size

    @property
    def touch1_per_page(self) -> float:
        return self.minor["touch1"].median / self.pages if "touch1" in self.minor else 0.0

    @property
    def file_read_per_page(self) -> float | None:
        """file_read's major faults per page of the test file (None: no file stage, or its pages not recorded)."""
        files = self.cell.file_pages
        return self.major["file_read"].median / files if files and "file_read" in self.major else None


@dataclass(frozen=True)
class Diff:
    arch: str
    buffer_size: int
    what: str  # e.g. "musl vs glibc, static"
    a: str  # variant names
    b: str
    stage: str
    a_median: float
    b_median: float

    @property
    def delta(self) -> float:
        return self.b_median - self.a_median


@dataclass(frozen=True)
class VersionRow:
    """One cell measured at several libc versions (suites), everything else equal: entry medians and deltas."""

    arch: str
    variant: str
    buffer_size: int
    axes: str  # the other axes (not the suite)
    entry: dict[str, float]  # libc version -> entry median, oldest first

    @property
    def deltas(self) -> list[tuple[str, str, float]]:
        versions = list(self.entry)
        return [(a, b, self.entry[b] - self.entry[a]) for a, b in itertools.pairwise(versions)]


@dataclass(frozen=True)
class OneThing:
    title: str
    label: str
    rows: list[VersionRow]


@dataclass(frozen=True)
class PerPage:
    row: str
    variant: str
    buffer_size: int
    page_size: int
    values: tuple[str, ...]  # touch1, touch2, file_map, file_read major: per page


# (axis, title, what a value is called, the label of a cell's value): the report's one-thing-at-a-time views
ONE_THING: tuple[tuple[str, str, str, Callable[[Cell], str]], ...] = (
    ("suite", "libc versions", "libc version", lambda c: c.libc_version_run or ""),
    ("kernel", "Kernels", "kernel release", lambda c: c.kernel_release),
    ("pagesize", "Page sizes", "page size", lambda c: f"{c.page_size // 1024}k"),
)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version))


@dataclass(frozen=True)
class Report:
    run: RunMeta
    cells: list[CellView]
    errors: list[CellError]
    trends: dict[str, list[float]]  # cell name (arch variant size) -> entry medians of its last runs, oldest first
    traced: list[explained.Traced] = field(default_factory=list)  # lab run --explain: one traced run per cell
    trace_errors: list[str] = field(default_factory=list)
    emulators: list[across.CellAgreement] = field(default_factory=list)  # --axis qemu=...: each cell vs the default QEMU's
    damaged: list[str] = field(default_factory=list)  # stored traced accounts that do not parse (file: why)
    pruned: bool = False  # its run directory is gone (retention): raw outputs, logs and traced accounts with it

    @property
    def arches(self) -> list[str]:
        """The report's rows: each arch, once per axes combination it was measured at."""
        return list(dict.fromkeys([c.row for c in self.cells] + [row_of(e) for e in self.errors]))

    @property
    def variants(self) -> list[str]:
        present = {c.cell.variant for c in self.cells} | {e.variant for e in self.errors}
        return [name for name in variants.names() if name in present]

    @property
    def sizes(self) -> list[int]:
        return sorted({c.cell.buffer_size for c in self.cells} | {e.buffer_size for e in self.errors})

    @property
    def stages(self) -> list[str]:
        seen = {s for c in self.cells for s in c.minor}
        return [s for s in STAGES if s in seen]

    def find(self, row: str, variant: str, size: int) -> CellView | None:
        for c in self.cells:
            if (c.row, c.cell.variant, c.cell.buffer_size) == (row, variant, size):
                return c
        return None

    def page_size(self, row: str, size: int) -> int | None:
        """The page size of a report row's cells (the arch comparison shows 4, 16 and 64 KiB side by side)."""
        return next((c.cell.page_size for c in self.cells if c.row == row and c.cell.buffer_size == size), None)

    def error(self, row: str, variant: str, size: int) -> CellError | None:
        for e in self.errors:
            if (row_of(e), e.variant, e.buffer_size) == (row, variant, size):
                return e
        return None

    def by_axis(self, axis: str, label: Callable[[Cell], str]) -> list[VersionRow]:
        """Cells that differ only in ``axis``, by ``label`` of each (its libc version, kernel release, page size)."""
        groups: dict[tuple[str, str, int, str], dict[str, float]] = {}
        for c in self.cells:
            rest = axes_mod.shown(",".join(a for a in c.cell.axes.split(",") if a and not a.startswith(axis + "=")))
            if "entry" in c.minor and label(c.cell):
                groups.setdefault((c.cell.arch, c.cell.variant, c.cell.buffer_size, rest), {})[label(c.cell)] = c.minor["entry"].median
        return [
            VersionRow(arch, variant, size, rest, dict(sorted(entry.items(), key=lambda kv: _version_key(kv[0]))))
            for (arch, variant, size, rest), entry in groups.items()
            if len(entry) > 1
        ]

    def libc_versions(self) -> list[VersionRow]:
        """The libc-version view: cells that differ only in suite, by the libc version they ran (when the run spans suites)."""
        return self.by_axis("suite", lambda c: c.libc_version_run or "")

    def one_thing(self) -> list[OneThing]:
        """The one-thing-at-a-time views that have pairs: libc version (suite), kernel, page size."""
        views = [OneThing(title, label, self.by_axis(axis, of)) for axis, title, label, of in ONE_THING]
        return [v for v in views if v.rows]

    def per_page(self) -> list[PerPage]:
        """Every cell's page-scaled stages per page: the buffer's pages (touch1, touch2), the file's (file_map,
        file_read's major faults), at the page size the probe reported."""
        out = []
        for c in self.cells:
            pages = max(1, c.cell.buffer_size // c.cell.page_size)
            files = c.cell.file_pages
            values = [c.minor[s].median / pages if s in c.minor else None for s in ("touch1", "touch2")]
            values += [c.minor["file_map"].median / files if files and "file_map" in c.minor else None]
            values += [c.major["file_read"].median / files if files and "file_read" in c.major else None]
            out.append(
                PerPage(
                    c.row, c.cell.variant, c.cell.buffer_size, c.cell.page_size, tuple("–" if v is None else f"{v:.3g}" for v in values)
                )
            )
        return out

    def diffs(self) -> list[Diff]:
        """The variant table's one-thing-at-a-time pairs (libc per linkage, linkage per libc), per arch, size and stage."""
        pairs = variants.comparison_pairs()
        out = []
        for arch in self.arches:
            for size in self.sizes:
                for what, a, b in pairs:
                    ca, cb = self.find(arch, a, size), self.find(arch, b, size)
                    if ca and cb:
                        for stage in self.stages:
                            if stage in ca.minor and stage in cb.minor:
                                out.append(Diff(arch, size, what, a, b, stage, ca.minor[stage].median, cb.minor[stage].median))
        return out


Trends = dict[str, list[float]]


def build(store: Store, run_ref: str | None = None, trends: Trends | None = None) -> Report:
    """A run's report from the store (and its directory's traced accounts); ``trends``: each cell's entry medians
    when the caller has them already (the site, which read every run at once)."""
    run = store.run(run_ref)
    views = []
    for cell, stages in store.measured(run.id):
        order = [s for s in STAGES if s in stages]
        views.append(CellView(cell, {s: Stat.of(stages[s][0]) for s in order}, {s: Stat.of(stages[s][1]) for s in order}))
    trends = trends if trends is not None else _trends(store, run, views)
    pruned = not run.run_dir or not Path(run.run_dir).is_dir()
    traced, trace_errors, damaged = ([], [], []) if pruned else explained.load(Path(run.run_dir))
    emulators = []
    if len({axes_mod.values(v.cell.axes).get("qemu") for v in views}) > 1:  # the same guests under several QEMUs
        emulators = across.per_cell(across.across([(c, store.samples(i)) for i, c in store.cells(run.id)], "qemu"))
    return Report(run, views, store.errors(run.id), trends, traced, trace_errors, emulators, damaged, pruned)


def trend_key(cell: Cell) -> str:
    """A report's key of a cell's entry trend (its name and buffer size)."""
    shown = axes_mod.shown(cell.axes)
    return f"{cell.arch} [{shown}] {cell.variant} {cell.buffer_size}" if shown else f"{cell.arch} {cell.variant} {cell.buffer_size}"


def _trends(store: Store, run: RunMeta, views: list[CellView]) -> Trends:
    trends = {}
    for v in views:
        history = store.history(v.cell.arch, v.cell.variant, "entry", v.cell.buffer_size, last=TREND_RUNS, axes=v.cell.axes)
        rows = [r for r in history if r[1] <= run.started]
        trends[trend_key(v.cell)] = [float(statistics.median(r[3])) for r in rows]
    return trends


@functools.cache
def _env(autoescape: bool) -> jinja2.Environment:
    """The templates' environment (one per process: each template is compiled once)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    env.filters["size"] = size_text
    return env


def to_json(report: Report, comparison: Comparison | None = None) -> str:
    data: dict[str, object] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "run": asdict(report.run),
        "cells": [
            {
                "cell": asdict(c.cell),
                "minor": {k: asdict(v) for k, v in c.minor.items()},
                "major": {k: asdict(v) for k, v in c.major.items()},
            }
            for c in report.cells
        ],
        "errors": [asdict(e) for e in report.errors],
        "diffs": [{**asdict(d), "delta": d.delta} for d in report.diffs()],
        "trends": report.trends,
        "emulators": [asdict(e) for e in report.emulators],
    }
    if comparison is not None:
        data["comparison"] = {
            "label": comparison.label,
            "counts": comparison.counts(),
            "findings": [asdict(f) for f in comparison.findings],
        }
    return json.dumps(data, indent=2) + "\n"


def render(report: Report, fmt_name: str, comparison: Comparison | None = None, site: dict[str, object] | None = None) -> str:
    """The report as ``fmt_name``; ``site``: rendered as a page of the history site (links back to it)."""
    if fmt_name == "json":
        return to_json(report, comparison)
    if fmt_name == "md":
        return _env(False).get_template("report.md.j2").render(r=report, cmp=comparison)
    charts = {size: (bar_chart(report, size), stacked_chart(report, size)) for size in report.sizes}
    colours = dict(zip(STAGES, STAGE_COLOURS, strict=True))
    template = _env(True).get_template("report.html.j2")
    traced = {"chart": explained.chart(report.traced), "pairs": explained.pair_diffs(report.traced)} if report.traced else None
    return template.render(r=report, cmp=comparison, charts=charts, stage_colours=colours, sparkline=sparkline, traced=traced, site=site)


def export(store: Store, run_ref: str | None, fmt_name: str) -> str:
    """Every sample of a run with its cell's identity and environment: CSV rows or a JSON document."""
    run = store.run(run_ref)
    rows = []
    for cell_id, cell in store.cells(run.id):
        for s in store.samples(cell_id):
            rows.append({"run": run.id, **asdict(cell), **asdict(s)})
    if fmt_name == "json":
        return json.dumps({"run": asdict(run), "samples": rows, "errors": [asdict(e) for e in store.errors(run.id)]}, indent=2) + "\n"
    out = io.StringIO()
    columns = ["run", *(f.name for f in fields(Cell)), *(f.name for f in fields(Sample))]
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_run_reports(store: Store, run_id: str, run_dir: Path, comparison: Comparison | None = None) -> list[Path]:
    """report.html and report.md into the run directory."""
    report = build(store, run_id)
    paths = []
    for name, fmt_name in (("report.html", "html"), ("report.md", "md")):
        write_atomic(run_dir / name, render(report, fmt_name, comparison))
        paths.append(run_dir / name)
    return paths
