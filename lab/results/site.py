"""The history site (``lab site``, and every ``lab nightly``): every run and nightly of a store as static pages.

``index.html`` lists the runs (status, cells, errors, duration, verdict, host) and the cells; ``runs/<id>.html``
is a run's report; ``cells/<slug>.html`` a cell's trends, one chart per stage (:mod:`lab.results.trends`);
``regressions/<id>.html`` a nightly's regressions, each explained by its traced accounts
(:mod:`lab.results.regressions`). Every file is self-contained (inline CSS and SVG, relative links, nothing
fetched), so the directory reads from disk or any web server.

Incremental: ``.lab-site.json`` keeps a digest of each page's inputs (its data, the run directory's traced
accounts, the generator: lab's version and these templates). A page is rendered only when that digest
changed and written only when its text did; a page whose run left the store is removed. Building again with
no new run changes no file; one new run renders its page, its cells' pages and the index.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lab import version
from lab.errors import InfraError, UserError
from lab.files import write_atomic
from lab.results import baselines, regressions, report, trends
from lab.results.charts import fmt
from lab.results.compare import Comparison, from_json
from lab.results.rows import Cell, CellError, Nightly, RunMeta
from lab.results.store import Store
from lab.results.verdict import Finding, cell_name

MANIFEST = ".lab-site.json"
_SOURCES = (Path(__file__), Path(trends.__file__), Path(report.__file__), Path(regressions.__file__))


@dataclass(frozen=True)
class Built:
    out: Path
    pages: int
    written: tuple[str, ...]  # pages whose file changed (relative paths)
    removed: tuple[str, ...]
    problems: tuple[str, ...]  # one line each: what the site could not show, and why


@dataclass
class _Judged:
    nightly: Nightly
    comparison: Comparison | None
    explained: list[regressions.Explanation]


@dataclass
class _Data:
    runs: list[RunMeta]  # the store's own runs (a fleet's host runs are part of their fleet run), oldest first
    cells: dict[str, list[tuple[Cell, dict[str, tuple[list[int], list[int]]]]]]  # run -> measured cells
    errors: dict[str, list[CellError]]
    judged: dict[str, _Judged]
    series: dict[tuple[str, str, int, str], trends.Series]
    fleets: set[str]
    index: dict[tuple[str, tuple[str, str, int, str]], int]  # (run, cell key) -> the run's point in the cell's series
    problems: list[str] = field(default_factory=list)


def _generator() -> str:
    h = hashlib.sha256(version.__version__.encode())
    for p in sorted(report.TEMPLATES.iterdir()) + list(_SOURCES):
        h.update(p.read_bytes())
    return h.hexdigest()


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _flat(row: object) -> list[object]:
    """A row's fields, shallow (the store's rows hold plain values; dataclasses.asdict's deep copy is 10x slower)."""
    return [getattr(row, f.name) for f in fields(row)]  # type: ignore[arg-type]


def _fingerprint(p: trends.Point) -> list[object]:
    stats = [[k, sorted((s, v.median, v.min, v.max, v.n) for s, v in m.items())] for k, m in (("minor", p.minor), ("major", p.major))]
    return [p.run_id, p.started, stats, sorted(p.env.items()), sorted(p.band.items()), sorted(p.regressed), p.nightly]


def _key(c: Cell) -> tuple[str, str, int, str]:
    return (c.arch, c.variant, c.buffer_size, c.axes)


def _name(c: Cell) -> str:
    return cell_name(c.arch, c.variant, c.buffer_size, c.axes)


def _load(store: Store, baseline: str | None) -> _Data:
    everything = store.runs()
    runs = [r for r in everything if not r.part_of]
    all_cells, samples, errors = store.everything()
    problems: list[str] = []
    judged: dict[str, _Judged] = {}
    for n in store.nightlies():
        try:
            judged[n.run_id] = _Judged(n, from_json(n.comparison), regressions.from_json(n.explained))
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"nightly {n.run_id}: its stored verdict does not parse ({type(exc).__name__}): its pages show no verdict")
            judged[n.run_id] = _Judged(n, None, [])
    ranges: dict[tuple[str, str, int, str], dict[tuple[str, str], tuple[int, int]]] = {}
    if baseline and baseline in {name for name, _, _ in store.baselines()}:
        for b in baselines.load(store, baseline)[1]:
            ranges[b.key] = {(s, k): (min(v), max(v)) for s, counters in b.stages.items() for k, v in counters.items() if v}
    cells: dict[str, list[tuple[Cell, dict[str, tuple[list[int], list[int]]]]]] = {}
    errored = {(run_id, e.arch, e.variant, e.buffer_size, e.axes) for run_id, errs in errors.items() for e in errs}
    for cell_id, run_id, cell in all_cells:
        if (run_id, *_key(cell)) in errored:
            continue  # an errored cell's partial samples are evidence, not a measurement
        stages: dict[str, tuple[list[int], list[int]]] = {}
        for stage, minor, major in samples.get(cell_id, ()):
            stages.setdefault(stage, ([], []))[0].append(minor)
            stages[stage][1].append(major)
        cells.setdefault(run_id, []).append((cell, stages))
    points: dict[tuple[str, str, int, str], list[trends.Point]] = {}
    names: dict[tuple[str, str, int, str], str] = {}
    index: dict[tuple[str, tuple[str, str, int, str]], int] = {}
    for run in runs:
        j = judged.get(run.id)
        findings = j.comparison.findings if j and j.comparison else []
        by_cell: dict[str, list[Finding]] = {}
        for f in findings:
            by_cell.setdefault(f.cell, []).append(f)
        for cell, stages in cells.get(run.id, ()):
            name = names.get(_key(cell)) or names.setdefault(_key(cell), _name(cell))
            mine = by_cell.get(name, [])
            band = {(f.stage, f.counter): f.base_range for f in mine if f.base_range} if j else ranges.get(_key(cell), {})
            env = {k: str(getattr(cell, k, "")) for k, _ in trends.MARKED if k != "lab_version"} | {"lab_version": run.lab_version}
            index[(run.id, _key(cell))] = len(points.setdefault(_key(cell), []))
            points[_key(cell)].append(
                trends.Point(
                    run.id,
                    run.started,
                    {s: report.Stat.of(v[0]) for s, v in stages.items() if v[0]},
                    {s: report.Stat.of(v[1]) for s, v in stages.items() if v[1]},
                    env,
                    band,
                    frozenset((f.stage, f.counter) for f in mine if f.verdict == "regressed"),
                    j is not None,
                )
            )
    series = {k: trends.Series(*k, names[k], tuple(p)) for k, p in points.items()}
    fleets = {r.part_of for r in everything if r.part_of}
    return _Data(runs, cells, errors, judged, series, fleets, index, problems)


def _explain_listing(run: RunMeta) -> list[tuple[str, int, int]]:
    root = Path(run.run_dir) / "explain" if run.run_dir else None
    if root is None or not root.is_dir():
        return []
    return [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.glob("*/*.json"))]


def _pruned(run: RunMeta) -> bool:
    return not run.run_dir or not Path(run.run_dir).is_dir()


Page = tuple[str, Callable[[], tuple[str, list[str]]]]  # (inputs' digest, render: text and problems)


def _template(name: str, **ctx: Any) -> Callable[[], tuple[str, list[str]]]:
    def render() -> tuple[str, list[str]]:
        return report._env(True).get_template(name).render(**ctx, day=_when), []

    return render


def _cell_page(s: trends.Series) -> tuple[str, list[str]]:
    charts = [(st, c, trends.chart(s, st, c)) for st in s.stages() for c in ("minflt", "majflt") if c == "minflt" or _any_major(s, st)]
    return _template("site_cell.html.j2", s=s, charts=charts, changes=s.changes())()


def _pages(store: Store, d: _Data, gen: str) -> dict[str, Page]:
    pages: dict[str, Page] = {}
    slugs = {s.name: s.slug for s in d.series.values()}
    for run in d.runs:
        pages[f"runs/{run.id}.html"] = _run_page(store, d, run, gen)
        j = d.judged.get(run.id)
        if j and j.comparison and j.comparison.exit_code == 1:
            mine = {e.cell: slugs[e.cell] for e in j.explained if e.cell in slugs} | {
                f.cell: slugs[f.cell] for f in j.comparison.findings if f.cell in slugs
            }
            pages[f"regressions/{run.id}.html"] = (
                _digest(gen, _flat(run), _flat(j.nightly), mine),
                _template("site_regressions.html.j2", run=run, j=j, series=mine),
            )
    for s in d.series.values():
        key = _digest(gen, [_fingerprint(p) for p in s.points])
        pages[f"cells/{s.slug}.html"] = (key, functools.partial(_cell_page, s))
    rows = [_index_row(d, r) for r in reversed(d.runs)]
    cells = [_cell_row(s) for s in sorted(d.series.values(), key=lambda s: (s.arch, s.variant, s.buffer_size, s.axes))]
    pages["index.html"] = (_digest(gen, rows, cells), _template("site_index.html.j2", runs=rows, cells=cells, store=str(store.path)))
    return pages


def _any_major(s: trends.Series, stage: str) -> bool:
    return any(p.major.get(stage) and p.major[stage].max for p in s.points)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def _run_page(store: Store, d: _Data, run: RunMeta, gen: str) -> Page:
    measured = d.cells.get(run.id, [])
    trend: report.Trends = {}
    links: dict[str, str] = {}
    for cell, _ in measured:
        s = d.series[_key(cell)]
        at = d.index[(run.id, _key(cell))]
        upto = s.points[max(0, at + 1 - report.TREND_RUNS) : at + 1]
        trend[report.trend_key(cell)] = [p.minor["entry"].median for p in upto if "entry" in p.minor]
        links[report.trend_key(cell)] = f"../cells/{s.slug}.html"
    j = d.judged.get(run.id)
    site: dict[str, object] = {
        "index": "../index.html",
        "regressions": f"../regressions/{run.id}.html" if j and j.comparison and j.comparison.exit_code == 1 else None,
        "cells": links,
    }
    key = _digest(gen, _flat(run), [(_flat(c), st) for c, st in measured], [_flat(e) for e in d.errors.get(run.id, [])], trend,
                  site, _flat(j.nightly) if j else None, _pruned(run), _explain_listing(run))  # fmt: skip

    def render() -> tuple[str, list[str]]:
        rep = report.build(store, run.id, trend)
        return report.render(rep, "html", j.comparison if j else None, site), list(rep.damaged)

    return key, render


def _index_row(d: _Data, run: RunMeta) -> dict[str, Any]:
    j = d.judged.get(run.id)
    cmp = j.comparison if j else None
    verdict = ", ".join(f"{n} {v}" for v, n in sorted(cmp.counts().items())) if cmp else ("(verdict unreadable)" if j else "")
    return {
        "id": run.id,
        "started": _when(run.started),
        "kind": "nightly" if j else "fleet run" if run.id in d.fleets else "run",
        "status": run.status,
        "cells": len(d.cells.get(run.id, [])),
        "errors": len(d.errors.get(run.id, [])),
        "duration": f"{(run.ended - run.started) / 60:.1f} min" if run.ended else "",
        "verdict": verdict,
        "regressed": bool(cmp and cmp.exit_code == 1),
        "baseline": j.nightly.baseline if j else "",
        "host": run.host,
        "lab": run.lab_version,
        "pruned": _pruned(run),
    }


def _cell_row(s: trends.Series) -> dict[str, Any]:
    last = s.points[-1]
    entry = last.minor.get("entry")
    return {
        "slug": s.slug,
        "name": s.name,
        "runs": len(s.points),
        "first": trends.day(s.points[0].started),
        "last": trends.day(last.started),
        "entry": fmt(entry.median) if entry else "–",
        "changes": len(s.changes()),
        "regressions": sum(1 for p in s.points if p.regressed),
        "trend": [p.minor["entry"].median for p in s.points[-60:] if "entry" in p.minor],
    }


def _prepare(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file, not a directory", "pass --out DIR (or set nightly.site in lab.yaml) naming a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InfraError(f"cannot create the site directory {out}: {exc.strerror}", "pass --out DIR somewhere writable") from None
    if not os.access(out, os.W_OK | os.X_OK):  # a read-only mount, or permissions (asked, not tried: a build changes nothing)
        raise InfraError(f"{out}: cannot write the site here (read-only)", "make it writable or pass --out DIR elsewhere")


def build(store: Store, out: Path, baseline: str | None = None) -> Built:
    """Build (or bring up to date) the site in ``out`` from ``store``; ``baseline``: the band of cells no nightly
    judged (the nightly baseline's ranges)."""
    _prepare(out)
    gen = _generator()
    data = _load(store, baseline)
    pages = _pages(store, data, gen)
    try:
        old = json.loads((out / MANIFEST).read_text())
        known: dict[str, Any] = old.get("pages", {}) if isinstance(old, dict) else {}
    except (OSError, ValueError):
        known = {}
    manifest: dict[str, Any] = {}
    written, problems = [], list(data.problems)
    for rel, (key, render) in sorted(pages.items()):
        path = out / rel
        seen = known.get(rel)
        if isinstance(seen, dict) and seen.get("key") == key and path.is_file():
            manifest[rel] = seen
            problems += seen.get("problems", [])
            continue
        text, found = render()
        problems += found
        manifest[rel] = {"key": key, "problems": found}
        try:
            same = path.is_file() and path.read_text() == text
        except (OSError, UnicodeDecodeError):
            same = False
        if not same:
            write_atomic(path, text)
            written.append(rel)
    removed = []
    for rel in sorted(set(known) - set(pages)):
        if (out / rel).is_file() and "/" in rel and ".." not in rel:
            (out / rel).unlink()
            removed.append(rel)
    text = json.dumps({"generator": gen, "pages": manifest}, indent=1, sort_keys=True) + "\n"
    if not (out / MANIFEST).is_file() or (out / MANIFEST).read_text() != text:
        write_atomic(out / MANIFEST, text)
    return Built(out, len(pages), tuple(written), tuple(removed), tuple(dict.fromkeys(problems)))
