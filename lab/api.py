"""lab's Python API: the command line's workflows as functions, typed requests in, typed results out.

Every ``lab`` command that does more than print a table is one call here; the
CLI only parses arguments into these requests, calls, prints and maps errors
to exit codes. Errors are :class:`~lab.errors.UserError` or
:class:`~lab.errors.InfraError` (see :mod:`lab.errors`); Ctrl-C propagates
after every guest has been shut down.

    cfg = lab.config.load("lab.yaml")
    result = lab.run(cfg, lab.RunRequest(arch="all", repeat=5))
    nightly = lab.nightly(cfg, lab.NightlyRequest(lab.RunRequest(), baseline="nightly"))
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from lab.config import STAGES, Config
from lab.errors import InfraError, UserError
from lab.guests import doctor as doctor_mod
from lab.measure.plan import Plan, make_plan, with_out
from lab.measure.plan import RunRequest as RunRequest  # re-exported: part of the API
from lab.measure.rundir import raw_stem
from lab.measure.runner import Runner, Summary
from lab.payloads import toolchains
from lab.payloads.probe import ProbeResult
from lab.payloads.probe import parse as parse_probe
from lab.results import compare as compare_mod
from lab.results import nightly as nightly_mod
from lab.results import report
from lab.results.compare import Comparison
from lab.results.store import Store

Progress = Callable[[str, str], None]


def _quiet(arch: str, state: str) -> None:
    pass


@dataclass(frozen=True)
class RunResult:
    summary: Summary
    store: Path
    reports: tuple[Path, ...]


def plan(cfg: Config, req: RunRequest) -> Plan:
    """Validate ``req`` against ``cfg`` (usage errors surface here, before anything is built)."""
    return make_plan(cfg, req)


def run(cfg: Config, req: RunRequest, progress: Progress = _quiet, argv: list[str] | None = None, reports: bool = True) -> RunResult:
    """``lab run``: the matrix into the store and a run directory, with its reports."""
    cfg = with_out(cfg, req.out)
    the_plan = make_plan(cfg, req)
    with Store(cfg.run.store) as store:
        summary = Runner(cfg, the_plan, store, progress, argv or ["lab", *sys.argv[1:]]).run()
        written = report.write_run_reports(store, summary.run_id, summary.run_dir) if reports else []
    return RunResult(summary, cfg.run.store, tuple(written))


@dataclass(frozen=True)
class ProbeRun:
    """One probe run of ``lab probe``: its cell and the probe's parsed output."""

    arch: str
    variant: str
    repeat: int
    accel: str
    result: ProbeResult


def probe(cfg: Config, req: RunRequest) -> tuple[list[ProbeRun], dict[str, dict[str, dict[str, tuple[float, float]]]]]:
    """``lab probe``: the same engine as :func:`run`, into a temporary store that is discarded.

    Returns every run and, per arch and variant, each stage's median (minor, major) delta.
    A failed cell raises its error; its run directory is kept and named in the error.
    """
    tmp = Path(tempfile.mkdtemp(prefix="lab-probe-"))
    keep = False
    try:
        scratch = replace(cfg, results_dir=tmp, run=replace(cfg.run, store=tmp / "lab.sqlite"))
        the_plan = make_plan(scratch, replace(req, out=None))
        with Store(scratch.run.store) as store:
            summary = Runner(scratch, the_plan, store, _quiet, ["lab", "probe"]).run()
            errors = store.errors(summary.run_id)
            if errors:
                keep = True
                e = errors[0]
                raise InfraError(
                    f"{e.message} ({len(errors)} cell(s) failed)", f"see {summary.run_dir} (raw output, console logs)", details=e.evidence
                )
            runs: list[ProbeRun] = []
            medians: dict[str, dict[str, dict[str, tuple[float, float]]]] = {}
            for cell, stages in store.measured(summary.run_id):
                for i in range(len(stages["entry"][0])):
                    raw = summary.run_dir / "raw" / cell.arch / f"{raw_stem(cell.variant, cell.buffer_size, cell.axes, i)}.json"
                    runs.append(ProbeRun(cell.arch, cell.variant, i, cell.accel, parse_probe(raw.read_text())))
                medians.setdefault(cell.arch, {})[cell.variant] = {
                    stage: (float(statistics.median(minor)), float(statistics.median(major))) for stage, (minor, major) in stages.items()
                }
        return runs, medians
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


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


@dataclass(frozen=True)
class NightlyRequest:
    run: RunRequest = field(default_factory=RunRequest)
    baseline: str | None = None  # default: nightly.baseline
    tolerance_faults: float | None = None
    tolerance_percent: float | None = None


@dataclass(frozen=True)
class NightlyResult:
    run: RunResult
    comparison: Comparison
    out_dir: Path
    files: tuple[Path, ...]
    pruned: tuple[Path, ...]

    @property
    def exit_code(self) -> int:
        return self.comparison.exit_code


def nightly(cfg: Config, req: NightlyRequest, progress: Progress = _quiet, argv: list[str] | None = None) -> NightlyResult:
    """``lab nightly``: run, compare with the baseline, write a dated directory, prune old run directories."""
    name = req.baseline or cfg.nightly.baseline
    with Store(cfg.run.store) as store:
        store.baseline_document(name)  # fail before an hour of running if it does not exist
    ran = run(cfg, req.run, progress, argv, reports=False)
    runs_dir = ran.summary.run_dir.parent  # the run's own results directory (--out), not the configured one
    out_dir = nightly_mod.new_dir(cfg.nightly.dir)
    tol = compare_mod.tolerance(cfg, req.tolerance_faults, req.tolerance_percent)
    with Store(cfg.run.store) as store:
        result = compare_mod.against_baseline(store, name, ran.summary.run_id, tol)
        rep = report.build(store, ran.summary.run_id)
        html, md = report.render(rep, "html", result), report.render(rep, "md", result)
        files = nightly_mod.write_nightly(out_dir, result, html, md, ran.summary.seconds)
        written = report.write_run_reports(store, ran.summary.run_id, ran.summary.run_dir, result)
        pruned = nightly_mod.prune_runs(store, runs_dir, cfg.nightly.keep_runs)
    (out_dir / "run").symlink_to(ran.summary.run_dir)
    return NightlyResult(replace(ran, reports=tuple(written)), result, out_dir, tuple(files), tuple(pruned))


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
        rows = store.history(arch, variant, stage, size, last, axes)
        statuses = {r.id: r.status for r in store.runs()}
    return [HistoryRow(r, started, statuses.get(r, "?"), sz, tuple(mins), tuple(majs)) for r, started, sz, mins, majs in rows]


def doctor(cfg: Config, kvm: bool = True) -> list[doctor_mod.Check]:
    """``lab doctor``: host checks (QEMU, firmware, tools, toolchains, disk, mirror, cache, KVM)."""
    return doctor_mod.run_checks(cfg, kvm=kvm, extra=toolchains.checks)


def summary_dict(result: RunResult) -> dict[str, Any]:
    """A run's summary as JSON data (``lab run --json``)."""
    return {**asdict(result.summary), "run_dir": str(result.summary.run_dir), "store": str(result.store)}
