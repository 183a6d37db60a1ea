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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from lab import arches as arches_mod
from lab.config import STAGES, Config
from lab.errors import InfraError, UserError
from lab.explain import account as account_mod
from lab.explain import render as render_mod
from lab.explain.checks import Check
from lab.explain.checks import check as check_account
from lab.fleet import run as fleet_mod
from lab.guests import doctor as doctor_mod
from lab.guests import smoke as smoke_mod
from lab.guests.boot import Booted, boot, new_log_dir, snapshot_key_of
from lab.guests.images import ImageStore
from lab.measure import programs
from lab.measure.plan import Plan, make_plan, with_out
from lab.measure.plan import RunRequest as RunRequest  # re-exported: part of the API
from lab.measure.rundir import raw_stem
from lab.measure.runner import Runner, Summary
from lab.payloads import toolchains
from lab.payloads import variants as variants_mod
from lab.payloads.build import reseed_helper
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


@dataclass(frozen=True)
class ExplainRequest:
    run: RunRequest = field(default_factory=lambda: RunRequest(repeat=3))  # the cells, and untraced runs to check against
    program: tuple[str, ...] = ()  # trace this program instead of the probe (argv in the guest)
    put: Path | None = None  # upload this binary first (argv[0] may be its file name)
    diff: tuple[str, str] | None = None  # two cells, arch:variant


@dataclass(frozen=True)
class Explained:
    """One traced cell: its account and the checks that it adds up and agrees with untraced runs."""

    account: account_mod.Account
    checks: tuple[Check, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)  # as stored (render.to_dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def parse_cell(text: str) -> tuple[str, str]:
    """``arch:variant`` (for --diff), validated."""
    arch, sep, variant = text.partition(":")
    if not sep:
        raise UserError(f"--diff cell {text!r} is not arch:variant", "e.g. --diff arm64:glibc-dynamic arm64:musl-dynamic")
    try:
        return arches_mod.get(arch).name, variants_mod.variant(variant).name
    except UserError as exc:
        raise UserError(f"--diff cell {text!r}: {exc.message}", exc.remedy) from None


def _explain_run(req: ExplainRequest) -> RunRequest:
    run_req = replace(req.run, explain=True, out=None)
    if req.diff:
        cells = [parse_cell(c) for c in req.diff]
        run_req = replace(run_req, arch=",".join(dict.fromkeys(a for a, _ in cells)), variant=",".join(dict.fromkeys(v for _, v in cells)))
    return run_req


def explain_labels(cfg: Config, req: ExplainRequest) -> list[str]:
    """The progress lines :func:`explain` reports on (validating the request: usage errors before anything boots)."""
    if req.program or req.put:
        return [a.name for a in arches_mod.select(req.run.arch if req.run.arch is not None else cfg.arches)]
    return make_plan(cfg, _explain_run(req)).labels()


def explain(cfg: Config, req: ExplainRequest, progress: Progress = _quiet) -> list[Explained]:
    """``lab explain``: trace the probe cells of ``req.run`` (or ``req.program``) and attribute every fault.

    Probe cells go through :func:`run`'s engine with tracing on, into a temporary store that is discarded:
    a traced run never enters a store. A cell that failed raises its error (its run directory is kept).
    """
    if req.program or req.put:
        arches = arches_mod.select(req.run.arch if req.run.arch is not None else cfg.arches)
        return [
            Explained(a, tuple(check_account(a)))  # adds up, and no larger an exec set-up than exec can fault
            for a in programs.explain_program(cfg, arches, req.program or ((req.put.name,) if req.put else ()), req.put, progress)
        ]
    run_req = _explain_run(req)
    tmp = Path(tempfile.mkdtemp(prefix="lab-explain-"))
    keep = False
    try:
        scratch = replace(cfg, results_dir=tmp, run=replace(cfg.run, store=tmp / "lab.sqlite"))
        the_plan = make_plan(scratch, run_req)
        with Store(scratch.run.store) as store:
            summary = Runner(scratch, the_plan, store, progress, ["lab", "explain"]).run()
            errors = store.errors(summary.run_id)
        stored = render_mod.load_dir(summary.run_dir)
        failed = [d["error"] for d in stored if "error" in d]
        if errors or failed:
            keep = True
            first = errors[0].message if errors else failed[0]
            raise InfraError(f"{first} ({len(errors) + len(failed)} cell(s) failed)", f"see {summary.run_dir} (raw output, console logs)")
        out = []
        for d in stored:
            acc, checks = render_mod.from_dict(d)
            out.append(Explained(acc, tuple(checks), d))
        if req.diff:
            wanted = [f"{a}:{v}" for a, v in (parse_cell(c) for c in req.diff)]
            by_cell = {e.account.cell: e for e in out}
            out = [by_cell[c] for c in wanted]
        return out
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


def nightly(
    cfg: Config, req: NightlyRequest, progress: Progress = _quiet, argv: list[str] | None = None, fleet: Path | None = None
) -> NightlyResult:
    """``lab nightly``: run (on this host, or on the ``fleet`` inventory's hosts), compare with the baseline, write
    a dated directory, prune old run directories."""
    name = req.baseline or cfg.nightly.baseline
    with Store(cfg.run.store) as store:
        store.baseline_document(name)  # fail before an hour of running if it does not exist
    ran = fleet_run(cfg, req.run, fleet, argv, reports=False) if fleet else run(cfg, req.run, progress, argv, reports=False)
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


@contextmanager
def booted(cfg: Config, arch: str, accel: str | None = None) -> Iterator[Booted]:
    """``lab boot``/``shell``/``exec``: one fresh guest of ``arch`` (restored, and reseeded, when a snapshot matches),
    shut down when the block ends."""
    a = arches_mod.get(arch)
    image = ImageStore(cfg).ensure(a)
    with boot(cfg, image, accel, new_log_dir(cfg, a.name), reseed=reseed_helper(cfg, a)) as b:
        yield b


def smoke(cfg: Config, arch: str | None = None, accel: str | None = None) -> list[smoke_mod.SmokeResult]:
    """``lab smoke``: boot each selected arch and check what measurements rely on; a failure is a result."""
    store = ImageStore(cfg)
    selected = arches_mod.select(arch if arch is not None else cfg.arches)
    return [smoke_mod.smoke(cfg, a, store, accel, lambda a: reseed_helper(cfg, a)) for a in selected]


def prune_images(cfg: Config) -> list[Path]:
    """``lab images prune``: images current for no arch and every snapshot that is not current (what was deleted)."""
    return ImageStore(cfg).prune(lambda arch, key: snapshot_key_of(cfg, arch, key))


def doctor(cfg: Config, kvm: bool = True) -> list[doctor_mod.Check]:
    """``lab doctor``: host checks (QEMU, firmware, tools, toolchains, disk, mirror, cache, KVM)."""
    return doctor_mod.run_checks(cfg, kvm=kvm, extra=toolchains.checks)


def summary_dict(result: RunResult) -> dict[str, Any]:
    """A run's summary as JSON data (``lab run --json``)."""
    return {**asdict(result.summary), "run_dir": str(result.summary.run_dir), "store": str(result.store)}
