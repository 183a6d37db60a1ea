"""``lab explain``: traced cells (or any program) attributed fault by fault, their checks and their tables."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lab import arches as arches_mod
from lab.api.runs import Progress, _quiet
from lab.config import Config
from lab.errors import InfraError, UserError
from lab.explain import account as account_mod
from lab.explain import render as render_mod
from lab.explain.checks import Check
from lab.explain.checks import check as check_account
from lab.measure import programs
from lab.measure.plan import RunRequest, make_plan
from lab.measure.runner import Runner
from lab.payloads import variants as variants_mod
from lab.results.store import Store

EXPLAIN_FORMATS = render_mod.FORMATS


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
        failed = [d.get("error", d.get("damaged")) for d in stored if "error" in d or "damaged" in d]
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


def stage_of(explained: list[Explained], stage: str | None) -> str | None:
    """``--stage``, checked against the stages the accounts have."""
    if stage is None:
        return None
    known = {s for e in explained for s in e.account.stages}
    if stage not in known:
        raise UserError(f"--stage {stage!r} is not a stage of these runs", "stages: " + ", ".join(sorted(known)))
    return stage


def explain_text(explained: list[Explained], fmt: str, stage: str | None = None, top: int = 10) -> str:
    """The accounts as tables (``table``, ``md``) or as their stored form (``json``)."""
    if fmt == "json":
        return json.dumps([e.data or render_mod.to_dict(e.account) for e in explained], indent=2) + "\n"
    return "\n".join(render_mod.table(e.account, e.checks, stage, fmt == "md", top) for e in explained)


def diff_text(a: Explained, b: Explained, fmt: str, stage: str | None = None) -> str:
    """``lab explain --diff``: where two cells differ, object by object and section by section."""
    rows = account_mod.diff(a.account, b.account, stage)
    if fmt == "json":
        data = {"a": a.data, "b": b.data, "diff": [{"object": r.object, "section": r.section, "a": r.a, "b": r.b} for r in rows]}
        return json.dumps(data, indent=2) + "\n"
    return render_mod.diff_table(a.account, b.account, rows, stage, fmt == "md")
