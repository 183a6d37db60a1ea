"""The results side of the command line: lab run, runs, export, report."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from lab import arches, config, measure, runner
from lab.errors import UserError
from lab.toolchains import VARIANTS, select_variants
from lab.util import text_table


def _plan(args: argparse.Namespace, cfg: config.Config) -> runner.Plan:
    selected = arches.select(args.arch or cfg.arches)
    if args.variant:
        variants = select_variants(args.variant)
    else:
        libcs = _choices("--libc", args.libc, cfg.run.libcs, ("glibc", "musl"))
        linkages = _choices("--linkage", args.linkage, cfg.run.linkages, ("dynamic", "static"))
        variants = [v for v in VARIANTS if v.libc in libcs and v.linkage in linkages]
    repeat = args.repeat if args.repeat is not None else cfg.run.repeat
    if repeat < 1:
        raise UserError(f"--repeat {repeat} is not valid", "use 1 or more (5 gives a useful median)")
    jobs = args.jobs if args.jobs is not None else (cfg.run.jobs or runner.default_jobs(len(selected)))
    if jobs < 1:
        raise UserError(f"--jobs {jobs} is not valid", "use 1 or more")
    sizes = [measure.parse_size(s) for s in (args.size.split(",") if args.size else cfg.run.sizes)]
    file_bytes = measure.parse_size(cfg.run.file_bytes)
    return runner.Plan(tuple(selected), tuple(variants), tuple(dict.fromkeys(sizes)), repeat, jobs, file_bytes, args.accel)


def _choices(flag: str, given: str | None, default: tuple[str, ...], allowed: tuple[str, ...]) -> list[str]:
    values = [v.strip() for v in given.split(",") if v.strip()] if given else list(default)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise UserError(f"{flag} {given!r} is not valid", "use a comma-separated list of " + ", ".join(allowed))
    return values


def execute_run(args: argparse.Namespace, cfg: config.Config, write_reports: bool = True) -> runner.Summary:
    """Run the plan the arguments describe; print the summary (text or JSON)."""
    from lab import report
    from lab.progress import Progress
    from lab.store import Store

    if args.out:
        cfg = replace(cfg, results_dir=Path(args.out).resolve())
    plan = _plan(args, cfg)
    progress = Progress.for_stream([a.name for a in plan.arches], quiet=args.quiet or args.run_quiet or args.json)
    with Store(cfg.run.store) as store:
        summary = runner.Runner(cfg, plan, store, progress.update, ["lab", *sys.argv[1:]]).run()
        reports = report.write_run_reports(store, summary.run_id, summary.run_dir) if write_reports else []
    result = {**asdict(summary), "run_dir": str(summary.run_dir), "store": str(cfg.run.store)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"run {summary.run_id}: {summary.status}, {summary.cells} cell(s), {summary.errors} error(s) in {summary.seconds:.1f}s")
        print(f"run directory: {summary.run_dir}")
        if reports:
            print("report: " + " ".join(str(p) for p in reports))
        print(f"reproduce with: {summary.run_dir / 'reproduce.sh'}")
    return summary


def cmd_run(args: argparse.Namespace, cfg: config.Config) -> int:
    return 0 if execute_run(args, cfg).status == "complete" else 1


def output(text: str, path: str | None) -> None:
    if path:
        from lab.util import write_atomic

        write_atomic(Path(path), text)
        print(f"wrote {path}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def cmd_runs(args: argparse.Namespace, cfg: config.Config) -> int:
    from lab import report
    from lab.store import Store

    with Store(cfg.run.store) as store:
        if args.runs_command == "list":
            rows = [(r, len(store.cells(r.id)), len(store.errors(r.id))) for r in store.runs()]
            if args.json:
                print(json.dumps([{**asdict(r), "cells": c, "errors": e} for r, c, e in rows], indent=2))
            else:
                table = [
                    (r.id, r.status, c, e, r.repeat, time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)), r.argv) for r, c, e in rows
                ]
                print(
                    text_table(table, ("run", "status", "cells", "errors", "repeat", "started", "command"))
                    if table
                    else f"no runs in {cfg.run.store}"
                )
            return 0
        r = report.build(store, args.run)
        run = r.run
        print(f"run {run.id}: {run.status}; {len(r.cells)} cell(s), {len(r.errors)} error(s); repeat {run.repeat}")
        print(f"host {run.host}, lab {run.lab_version} at {run.git_revision}; run directory {run.run_dir}")
        print(f"command: {run.argv}\n")
        sys.stdout.write(report.render(r, "md").split("\n## Per stage")[0].split("\n", 4)[-1])
        return 0


def cmd_export(args: argparse.Namespace, cfg: config.Config) -> int:
    from lab import report
    from lab.store import Store

    with Store(cfg.run.store) as store:
        output(report.export(store, args.run, args.format), args.output)
    return 0


def cmd_report(args: argparse.Namespace, cfg: config.Config) -> int:
    from lab import report
    from lab.store import Store

    with Store(cfg.run.store) as store:
        output(report.render(report.build(store, args.run), args.format), args.output)
    return 0
