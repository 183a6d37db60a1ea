"""The run workflows: ``lab run``, ``probe``, ``fleet run/provision``, and reading runs back (runs, report, export,
import). Typed requests in, typed results out; the CLI prints them."""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from lab.config import Config
from lab.errors import InfraError
from lab.files import write_atomic
from lab.fleet import run as fleet_mod
from lab.measure.plan import Plan, make_plan, with_out
from lab.measure.plan import RunRequest as RunRequest  # re-exported: part of the API
from lab.measure.plan import size as size  # re-exported: a --size value as the CLI parses it
from lab.measure.rundir import raw_stem
from lab.measure.runner import Runner, Summary
from lab.payloads.probe import ProbeResult
from lab.payloads.probe import parse as parse_probe
from lab.results import bundle, junit, report
from lab.results.store import RunMeta, Store

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


def fleet_run(cfg: Config, req: RunRequest, inventory: Path, argv: list[str] | None = None, reports: bool = True) -> RunResult:
    """``lab fleet run``: the matrix spread over an Ansible inventory's lab hosts, merged into one run here."""
    cfg = with_out(cfg, req.out)
    summary, store = fleet_mod.fleet_run(cfg, req, inventory, argv or ["lab", *sys.argv[1:]])
    return RunResult(summary, store, tuple(fleet_mod.write_reports(cfg, summary)) if reports else ())


def fleet_provision(cfg: Config, inventory: Path, limit: tuple[str, ...] = ()) -> fleet_mod.Provisioned:
    """``lab fleet provision``: make the inventory's hosts lab hosts at this lab's version (the Ansible role)."""
    return fleet_mod.provision(cfg, inventory, limit)


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


def summary_dict(result: RunResult) -> dict[str, Any]:
    """A run's summary as JSON data (``lab run --json``)."""
    return {**asdict(result.summary), "run_dir": str(result.summary.run_dir), "store": str(result.store)}


REPORT_FORMATS = report.FORMATS
EXPORT_FORMATS = ("json", "csv")


def write_run_junit(result: RunResult, path: Path) -> None:
    """``lab run --junit FILE``: the run's cells as JUnit test cases."""
    with Store(result.store, readonly=True) as store:
        write_atomic(path, junit.run_to_junit(report.build(store, result.summary.run_id)))


def runs_list(cfg: Config) -> list[tuple[RunMeta, int, int]]:
    """``lab runs list``: every run with its cell and error counts (empty when nothing has run yet)."""
    if not cfg.run.store.exists():
        return []
    with Store(cfg.run.store, readonly=True) as store:
        return [(r, len(store.cells(r.id)), len(store.errors(r.id))) for r in store.runs()]


def run_report(cfg: Config, run: str | None = None) -> report.Report:
    """One run (default: the latest) as a report, computed from the store alone."""
    with Store(cfg.run.store, readonly=True) as store:
        return report.build(store, run)


def render_report(rep: report.Report, fmt: str) -> str:
    return report.render(rep, fmt)


def export_run(cfg: Config, run: str | None, fmt: str) -> str:
    """``lab export``: every sample of a run with its cell's identity and environment (json or csv)."""
    with Store(cfg.run.store, readonly=True) as store:
        return report.export(store, run, fmt)


def export_bundle(cfg: Config, run: str | None, output: Path | None = None) -> Path:
    """``lab export --bundle``: a whole run as one checksummed archive; its path."""
    with Store(cfg.run.store, readonly=True) as store:
        return bundle.export(store, run, output)


def import_bundles(cfg: Config, paths: list[Path]) -> list[bundle.Imported]:
    """``lab import``: each bundle verified, then inserted (importing twice changes nothing)."""
    with Store(cfg.run.store) as store:
        return [bundle.import_(store, p, cfg.results_dir) for p in paths]
