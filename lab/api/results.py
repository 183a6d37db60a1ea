"""Verdicts and baselines: ``lab compare``, ``nightly``, ``history``, ``baseline ...``, and their renderings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from lab import axes as axes_mod
from lab.api.runs import Progress, RunResult, _quiet, fleet_run, run
from lab.config import STAGES, Config
from lab.errors import LabError, UserError
from lab.measure.plan import RunRequest
from lab.results import across as across_mod
from lab.results import baselines as baselines_mod
from lab.results import compare as compare_mod
from lab.results import junit, regressions, report
from lab.results import nightly as nightly_mod
from lab.results import site as site_mod
from lab.results.compare import Comparison
from lab.results.rows import Nightly
from lab.results.store import Store
from lab.results.verdict import CellData


@dataclass(frozen=True)
class CompareRequest:
    runs: tuple[str, ...] = ()  # [RUN] with a baseline, or (RUN_A, RUN_B)
    baseline: str | None = None
    tolerance_faults: float | None = None
    tolerance_percent: float | None = None


def compare(cfg: Config, req: CompareRequest) -> Comparison:
    """``lab compare``: a run (default: the latest) against a baseline, or run A against run B."""
    tol = compare_mod.tolerance(cfg, req.tolerance_faults, req.tolerance_percent)
    with Store(cfg.run.store, readonly=True) as store:
        if req.baseline:
            if len(req.runs) > 1:
                raise UserError("lab compare --baseline takes at most one run", "lab compare [RUN] --baseline NAME")
            return compare_mod.against_baseline(store, req.baseline, req.runs[0] if req.runs else None, tol)
        if len(req.runs) == 2:
            return compare_mod.between_runs(store, req.runs[0], req.runs[1], tol)
    raise UserError("lab compare needs --baseline NAME or two runs", "lab compare [RUN] --baseline NAME, or lab compare RUN_A RUN_B")


def compare_explained(cfg: Config, req: CompareRequest, result: Comparison) -> list[regressions.Explanation]:
    """``lab compare --explain``: each regression of ``result`` explained from both runs' traced accounts."""
    with Store(cfg.run.store, readonly=True) as store:
        base_run = baselines_mod.load(store, req.baseline)[0] if req.baseline else result.baseline_ref
        return regressions.explain(store, result, base_run)


def explained_text(explanations: list[regressions.Explanation]) -> str:
    return regressions.text(explanations)


def site(cfg: Config, out: Path | None = None) -> site_mod.Built:
    """``lab site``: the history site of every run in the store, brought up to date in ``out`` (nightly.site)."""
    with Store(cfg.run.store, readonly=True) as store:
        return site_mod.build(store, out or cfg.nightly.site, cfg.nightly.baseline)


@dataclass(frozen=True)
class NightlyRequest:
    run: RunRequest = field(default_factory=RunRequest)
    baseline: str | None = None  # default: nightly.baseline
    tolerance_faults: float | None = None
    tolerance_percent: float | None = None
    explain: bool | None = None  # trace every cell (default: nightly.explain; --explain in run also turns it on)


@dataclass(frozen=True)
class NightlyResult:
    run: RunResult
    comparison: Comparison
    out_dir: Path
    files: tuple[Path, ...]
    pruned: tuple[Path, ...]
    explained: tuple[regressions.Explanation, ...] = ()
    site: site_mod.Built | None = None
    site_problems: tuple[str, ...] = ()  # what the site could not show (or why it was not built)

    @property
    def exit_code(self) -> int:
        """The comparison's (1: a regression); else 4 when the site has a problem."""
        return self.comparison.exit_code or (4 if self.site_problems else 0)


def nightly(
    cfg: Config, req: NightlyRequest, progress: Progress = _quiet, argv: list[str] | None = None, fleet: Path | None = None
) -> NightlyResult:
    """``lab nightly``: run (on this host, or on the ``fleet`` inventory's hosts), compare with the baseline, write
    a dated directory, prune old run directories."""
    name = req.baseline or cfg.nightly.baseline
    with Store(cfg.run.store) as store:
        store.baseline_document(name)  # fail before an hour of running if it does not exist
    run_req = replace(req.run, explain=req.run.explain or (cfg.nightly.explain if req.explain is None else req.explain))
    ran = fleet_run(cfg, run_req, fleet, argv, reports=False) if fleet else run(cfg, run_req, progress, argv, reports=False)
    runs_dir = ran.summary.run_dir.parent  # the run's own results directory (--out), not the configured one
    out_dir = nightly_mod.new_dir(cfg.nightly.dir)
    tol = compare_mod.tolerance(cfg, req.tolerance_faults, req.tolerance_percent)
    with Store(cfg.run.store) as store:
        result = compare_mod.against_baseline(store, name, ran.summary.run_id, tol)
        source = baselines_mod.load(store, name)[0]
        explained = regressions.explain(store, result, source)
        store.add_nightly(Nightly(ran.summary.run_id, time.time(), str(out_dir), name, source, result.exit_code,
                                  compare_mod.to_json(result), regressions.to_json(explained)))  # fmt: skip
        rep = report.build(store, ran.summary.run_id)
        html, md = report.render(rep, "html", result), report.render(rep, "md", result)
        files = nightly_mod.write_nightly(out_dir, result, html, md, ran.summary.seconds, regressions.text(explained))
        written = report.write_run_reports(store, ran.summary.run_id, ran.summary.run_dir, result)
        pruned = nightly_mod.prune_runs(store, runs_dir, cfg.nightly.keep_runs)
        try:  # the night's results are kept whatever happens to the site
            built: site_mod.Built | None = site_mod.build(store, cfg.nightly.site, cfg.nightly.baseline)  # as lab site builds it
            problems = built.problems if built else ()
        except LabError as exc:
            built, problems = None, (f"{exc.message} ({exc.remedy})",)
    (out_dir / "run").symlink_to(ran.summary.run_dir)
    return NightlyResult(
        replace(ran, reports=tuple(written)), result, out_dir, tuple(files), tuple(pruned), tuple(explained), built, problems
    )


@dataclass(frozen=True)
class HistoryRow:
    run_id: str
    started: float
    status: str
    buffer_size: int
    minflt: tuple[int, ...]
    majflt: tuple[int, ...]


def history(
    cfg: Config, arch: str, variant: str, stage: str = "entry", size: int | None = None, last: int = 20, axes: str = ""
) -> list[HistoryRow]:
    """``lab history``: one cell's stage across runs, oldest first."""
    if stage not in STAGES:
        raise UserError(f"--stage {stage!r} is not valid", "stages: " + ", ".join(STAGES))
    if last < 1:
        raise UserError(f"--last {last} is not valid", "use 1 or more")
    with Store(cfg.run.store, readonly=True) as store:
        rows = store.history(arch, variant, stage, size, last, axes_mod.explicit(axes, {}))  # as shown: table defaults left out
        statuses = {r.id: r.status for r in store.runs()}
    return [HistoryRow(r, started, statuses.get(r, "?"), sz, tuple(mins), tuple(majs)) for r, started, sz, mins, majs in rows]


def comparison_text(result: Comparison, everything: bool = False) -> str:
    """Verdicts as a table, worst first (``everything``: unchanged stages too)."""
    return compare_mod.table(result, everything)


def comparison_json(result: Comparison) -> str:
    return compare_mod.to_json(result)


def comparison_junit(result: Comparison) -> str:
    return junit.to_junit(result)


def baseline_save(cfg: Config, name: str, run_id: str | None = None) -> tuple[str, int]:
    """``lab baseline save``: a run's (default: the latest complete one) cells as a baseline; (run, cell count)."""
    with Store(cfg.run.store) as store:
        return baselines_mod.save(store, name, run_id)


def baseline_list(cfg: Config) -> list[tuple[str, float, str]]:
    """(name, created, source run) of every baseline (empty when nothing has run yet)."""
    if not cfg.run.store.exists():
        return []
    with Store(cfg.run.store, readonly=True) as store:
        return store.baselines()


def baseline_show(cfg: Config, name: str) -> tuple[str, list[CellData]]:
    """A baseline's source run and cells."""
    with Store(cfg.run.store, readonly=True) as store:
        return baselines_mod.load(store, name)


def baseline_export(cfg: Config, name: str) -> str:
    with Store(cfg.run.store, readonly=True) as store:
        return store.baseline_document(name)


def baseline_import(cfg: Config, path: Path, replace_existing: bool = False) -> str:
    """``lab baseline import``: a baseline document (validated field by field); the name it was saved as."""
    with Store(cfg.run.store) as store:
        return baselines_mod.import_file(store, path, replace_existing)


def baseline_delete(cfg: Config, name: str) -> None:
    with Store(cfg.run.store) as store:
        store.delete_baseline(name)


def across(cfg: Config, run_ref: str | None, axis: str) -> list[across_mod.Agreement]:
    """``lab compare --across AXIS [RUN]``: a run's cells against the cells that differ from them in ``axis`` alone."""
    with Store(cfg.run.store, readonly=True) as store:
        meta = store.run(run_ref)
        cells = [(cell, store.samples(cell_id)) for cell_id, cell in store.cells(meta.id)]
    rows = across_mod.across(cells, axis)
    if not rows:
        raise UserError(
            f"run {meta.id} has no cells that differ in {axis} alone", f"run with --axis {axis}=A,B (e.g. qemu=host,trixie-backports)"
        )
    return rows


def across_text(rows: list[across_mod.Agreement], axis: str, fmt: str = "table", everything: bool = False) -> str:
    return across_mod.to_json(rows, axis) if fmt == "json" else across_mod.to_text(rows, axis, everything)
