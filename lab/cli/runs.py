"""Run commands: run, runs list/show, export (and bundles), import, report."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from lab import api, config
from lab.cli.common import Handler, Parser, output, run_options, run_request
from lab.progress import Progress
from lab.text import text_table


def add_parsers(sub: argparse._SubParsersAction[Parser]) -> dict[str, Handler]:
    run = sub.add_parser("run", help="the matrix: every arch x variant x size, --repeat times, into the store and a report")
    run_options(run)
    run.add_argument("--junit", help="also write JUnit XML (one testcase per cell) to this file")

    runs = sub.add_parser("runs", help="runs in the results store")
    rsub = runs.add_subparsers(dest="runs_command", required=True, parser_class=Parser)
    rl = rsub.add_parser("list", help="every run: id, status, cells, errors")
    rl.add_argument("--json", action="store_true")
    rs = rsub.add_parser("show", help="one run's facts and its start-up matrix")
    rs.add_argument("run", nargs="?", help="run id or unique prefix (default: the latest)")
    rs.add_argument("--json", action="store_true", help="the run's report data (as lab report --format json)")

    ex = sub.add_parser("export", help="every sample of a run as JSON or CSV, or the whole run as a bundle")
    ex.add_argument("run", nargs="?", help="run id or unique prefix (default: the latest)")
    ex.add_argument("--format", choices=api.EXPORT_FORMATS, default="json")
    ex.add_argument(
        "--bundle",
        action="store_true",
        help="the whole run (cells, samples, errors, run directory) as one checksummed archive for lab import",
    )
    ex.add_argument("-o", "--output", help="file to write (default: stdout; a bundle: ./RUN.labrun.tar.gz)")

    im = sub.add_parser("import", help="add runs from bundles (lab export --bundle) to the store; importing twice changes nothing")
    im.add_argument("bundles", nargs="+", metavar="BUNDLE")
    im.add_argument("--json", action="store_true")

    rep = sub.add_parser("report", help="render a run as HTML, Markdown or JSON")
    rep.add_argument("run", nargs="?", help="run id or unique prefix (default: the latest)")
    rep.add_argument("--format", choices=api.REPORT_FORMATS, default="html")
    rep.add_argument("-o", "--output", help="file to write (default: stdout)")
    return {"run": cmd_run, "runs": cmd_runs, "export": cmd_export, "import": cmd_import, "report": cmd_report}


def execute_run(args: argparse.Namespace, cfg: config.Config, reports: bool = True) -> api.RunResult:
    """lab run's progress display and summary around :func:`lab.api.run` (lab nightly shares it)."""
    req = run_request(args)
    selected = api.plan(cfg, req)  # usage errors before the progress display appears
    with Progress.for_stream(selected.labels(), quiet=args.quiet or args.run_quiet or args.json) as progress:
        return api.run(cfg, req, progress.update, ["lab", *sys.argv[1:]], reports=reports)


def print_summary(args: argparse.Namespace, result: api.RunResult) -> None:
    summary = result.summary
    if args.json:
        print(json.dumps(api.summary_dict(result), indent=2))
        return
    print(f"run {summary.run_id}: {summary.status}, {summary.cells} cell(s), {summary.errors} error(s) in {summary.seconds:.1f}s")
    print(f"run directory: {summary.run_dir}")
    if result.reports:
        print("report: " + " ".join(str(p) for p in result.reports))
    print(f"reproduce with: {summary.run_dir / 'reproduce.sh'}")


def cmd_run(args: argparse.Namespace, cfg: config.Config) -> int:
    result = execute_run(args, cfg)
    if args.junit:
        api.write_run_junit(result, Path(args.junit))
    print_summary(args, result)
    return 0 if result.summary.status == "complete" else 1


def cmd_runs(args: argparse.Namespace, cfg: config.Config) -> int:
    if args.runs_command == "list" and not cfg.run.store.exists():  # nothing run yet: an empty list, not an error
        print("[]" if args.json else f"no runs in {cfg.run.store}")
        return 0
    if args.runs_command == "list":
        rows = api.runs_list(cfg)
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
    r = api.run_report(cfg, args.run)
    if args.json:
        sys.stdout.write(api.render_report(r, "json"))
        return 0
    run = r.run
    print(f"run {run.id}: {run.status}; {len(r.cells)} cell(s), {len(r.errors)} error(s); repeat {run.repeat}")
    print(f"host {run.host}, lab {run.lab_version} at {run.git_revision}; run directory {run.run_dir}")
    print(f"command: {run.argv}\n")
    sys.stdout.write(api.render_report(r, "md").split("\n## Per stage")[0].split("\n", 4)[-1])
    return 0


def cmd_export(args: argparse.Namespace, cfg: config.Config) -> int:
    if args.bundle:
        print(api.export_bundle(cfg, args.run, Path(args.output) if args.output else None))
    else:
        output(api.export_run(cfg, args.run, args.format), args.output)
    return 0


def cmd_import(args: argparse.Namespace, cfg: config.Config) -> int:
    done = api.import_bundles(cfg, [Path(p) for p in args.bundles])
    if args.json:
        print(json.dumps([asdict(d) for d in done], indent=2))
    for d in done if not args.json else []:
        what = "imported" if d.new else "already in the store, unchanged"
        print(f"run {d.run_id} ({d.status}, {d.cells} cell(s), {d.errors} error(s)): {what}")
    return 0


def cmd_report(args: argparse.Namespace, cfg: config.Config) -> int:
    output(api.render_report(api.run_report(cfg, args.run), args.format), args.output)
    return 0
