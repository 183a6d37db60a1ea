"""Baseline commands: baseline save/list/show/export/import/delete, compare, nightly, history."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

from lab import api, arches, config
from lab.cli.common import Handler, Parser, output, run_options, run_request
from lab.cli.runs import print_summary
from lab.errors import UserError
from lab.files import write_atomic
from lab.payloads.variants import variant
from lab.progress import Progress
from lab.text import size_text, text_table


def add_parsers(sub: argparse._SubParsersAction[Parser]) -> dict[str, Handler]:
    b = sub.add_parser("baseline", help="save, list, show, export, import, delete baselines")
    bsub = b.add_subparsers(dest="baseline_command", required=True, parser_class=Parser)
    save = bsub.add_parser("save", help="keep a run's distributions and environments as baseline NAME")
    save.add_argument("name")
    save.add_argument("--run", help="run id or prefix (default: the latest complete run)")
    bsub.add_parser("list", help="every baseline: name, source run, created").add_argument("--json", action="store_true")
    for verb, text in (
        ("show", "a baseline's cells and entry medians"),
        ("export", "print a baseline as YAML (to keep in git)"),
        ("delete", "delete a baseline"),
    ):
        sp = bsub.add_parser(verb, help=text)
        sp.add_argument("name")
        if verb == "show":
            sp.add_argument("--json", action="store_true", help="every cell with its environment and per-stage counts")
    imp = bsub.add_parser("import", help="load a baseline YAML file (from lab baseline export)")
    imp.add_argument("file")
    imp.add_argument("--replace", action="store_true", help="overwrite a baseline of the same name")

    c = sub.add_parser("compare", help="verdicts: a run against a baseline, or run A against run B")
    c.add_argument("runs", nargs="*", help="[RUN] with --baseline (default: the latest run), or RUN_A RUN_B")
    c.add_argument("--baseline", help="baseline name")
    c.add_argument("--across", metavar="AXIS", help="one run's cells against those differing only in AXIS (e.g. qemu): do counts agree?")
    c.add_argument(
        "--explain", action="store_true", help="explain each regression: object x section x function diff of both runs' traced accounts"
    )
    verdict_options(c)

    n = sub.add_parser("nightly", help="run, compare with the baseline, write report + JUnit into a dated directory, prune old runs")
    nightly_options(n)

    st = sub.add_parser("site", help="the history site: every run and nightly as static pages (trends, regressions explained)")
    st.add_argument("--out", help="the site's directory (default: nightly.site in lab.yaml)")

    h = sub.add_parser("history", help="one cell's stage across runs")
    h.add_argument("--arch", required=True)
    h.add_argument("--variant", required=True)
    h.add_argument("--stage", default="entry")
    h.add_argument("--size", help="buffer size (default: every size)")
    h.add_argument("--last", type=int, default=20)
    h.add_argument("--axes", default="", help="the cell's axes, as shown in reports (default: none, e.g. thp=always)")
    h.add_argument("--json", action="store_true", help="every run's counts as JSON")
    return {"baseline": cmd_baseline, "compare": cmd_compare, "nightly": cmd_nightly, "history": cmd_history, "site": cmd_site}


def nightly_options(n: argparse.ArgumentParser) -> None:
    """``lab nightly``'s options (and ``lab fleet nightly``'s)."""
    n.add_argument("--baseline", help="baseline name (default: nightly.baseline in lab.yaml)")
    verdict_options(n, formats=False)
    run_options(n)
    n.add_argument("--no-explain", action="store_true", help="do not trace the cells (default: nightly.explain, which traces them)")


def verdict_options(p: argparse.ArgumentParser, formats: bool = True) -> None:
    p.add_argument("--tolerance-faults", type=float, help="override compare.faults for every stage")
    p.add_argument("--tolerance-percent", type=float, help="override compare.percent for every stage")
    if formats:
        p.add_argument("--format", choices=("table", "json"), default="table")
        p.add_argument("--junit", help="also write JUnit XML to this file")
        p.add_argument("--all", action="store_true", help="list unchanged stages too")


def cmd_baseline(args: argparse.Namespace, cfg: config.Config) -> int:
    verb = args.baseline_command
    if verb == "save":
        run_id, count = api.baseline_save(cfg, args.name, args.run)
        print(f"baseline {args.name}: {count} cell(s) from run {run_id}")
    elif verb == "list":
        saved = api.baseline_list(cfg)
        if args.json:
            print(json.dumps([{"name": n, "source_run": src, "created": t} for n, t, src in saved], indent=2))
            return 0
        listed = [(n, src, time.strftime("%Y-%m-%d %H:%M", time.localtime(t))) for n, t, src in saved]
        print(text_table(listed, ("name", "source run", "created")) if listed else f"no baselines in {cfg.run.store}")
    elif verb == "show":
        source, cells = api.baseline_show(cfg, args.name)
        if args.json:
            print(json.dumps({"name": args.name, "source_run": source, "cells": [asdict(c) for c in cells]}, indent=2, default=dict))
            return 0
        rows = [
            (
                c.arch,
                c.variant,
                c.buffer_size,
                f"{statistics.median(c.stages['entry']['minflt']):g}",
                len(c.stages["entry"]["minflt"]),
                c.env["kernel_release"],
                c.env["accel"],
            )
            for c in cells
        ]
        print(f"baseline {args.name} from run {source}")
        print(text_table(rows, ("arch", "variant", "buffer", "entry median", "repeats", "kernel", "accel")))
    elif verb == "export":
        sys.stdout.write(api.baseline_export(cfg, args.name))
    elif verb == "import":
        print(f"imported baseline {api.baseline_import(cfg, Path(args.file), args.replace)}")
    else:
        api.baseline_delete(cfg, args.name)
        print(f"deleted baseline {args.name}")
    return 0


def cmd_compare(args: argparse.Namespace, cfg: config.Config) -> int:
    if args.across:
        if len(args.runs) > 1 or args.baseline:
            raise UserError("--across compares within one run", "pass at most one RUN and no --baseline")
        rows = api.across(cfg, args.runs[0] if args.runs else None, args.across)
        output(api.across_text(rows, args.across, args.format, args.all), None)
        return 0 if all(r.agree for r in rows) else 1
    req = api.CompareRequest(tuple(args.runs), args.baseline, args.tolerance_faults, args.tolerance_percent)
    result = api.compare(cfg, req)
    explained = api.compare_explained(cfg, req, result) if args.explain else None
    if args.format == "json":
        doc = json.loads(api.comparison_json(result))
        output(
            json.dumps(doc | {"explained": [asdict(e) for e in explained]}, indent=2) + "\n"
            if explained is not None
            else api.comparison_json(result),
            None,
        )
    else:
        output(api.comparison_text(result, args.all) + ("\n" + api.explained_text(explained) if explained is not None else ""), None)
    if args.junit:
        write_atomic(Path(args.junit), api.comparison_junit(result))
    return result.exit_code


def cmd_nightly(args: argparse.Namespace, cfg: config.Config, fleet: Path | None = None) -> int:
    if args.no_explain and args.explain:
        raise UserError("lab nightly: --explain and --no-explain together", "pass one of them")
    req = api.NightlyRequest(
        run_request(args), args.baseline, args.tolerance_faults, args.tolerance_percent, False if args.no_explain else None
    )
    selected = api.plan(cfg, req.run)
    quiet = args.quiet or args.run_quiet
    with Progress.for_stream(selected.labels(), quiet=quiet or args.json) as progress:
        result = api.nightly(cfg, req, progress.update, ["lab", *sys.argv[1:]], fleet=fleet)
    if args.json:
        doc = {
            "run": api.summary_dict(result.run),
            "comparison": json.loads(api.comparison_json(result.comparison)),
            "out_dir": str(result.out_dir),
            "files": [str(p) for p in result.files],
            "pruned": [str(p) for p in result.pruned],
            "site": str(result.site.out) if result.site else None,
            "site_problems": list(result.site_problems),
            "exit_code": result.exit_code,
        }
        print(json.dumps(doc, indent=2))
        return result.exit_code
    for problem in result.site_problems:
        print(f"lab: site: {problem}", file=sys.stderr)
    if quiet:  # -q: the exit code and the nightly directory say it all
        return result.exit_code
    print_summary(args, result.run)
    sys.stdout.write(api.comparison_text(result.comparison))
    if result.explained:
        sys.stdout.write("\n" + api.explained_text(list(result.explained)))
    pruned = len(result.pruned)
    names = ", ".join(p.name for p in result.files)
    print(f"\nnightly: {result.out_dir} ({names}); pruned {pruned} old run director{'y' if pruned == 1 else 'ies'}")
    if result.site:
        print(f"site: {result.site.out / 'index.html'} ({len(result.site.written)} of {result.site.pages} page(s) rewritten)")
    return result.exit_code


def cmd_site(args: argparse.Namespace, cfg: config.Config) -> int:
    built = api.site(cfg, Path(args.out).resolve() if args.out else None)
    for problem in built.problems:
        print(f"lab: site: {problem}", file=sys.stderr)
    print(f"site: {built.out / 'index.html'}: {built.pages} page(s), {len(built.written)} rewritten, {len(built.removed)} removed")
    return 4 if built.problems else 0


def cmd_history(args: argparse.Namespace, cfg: config.Config) -> int:
    arch, v = arches.get(args.arch), variant(args.variant)
    rows = api.history(cfg, arch.name, v.name, args.stage, api.size(args.size) if args.size else None, args.last, args.axes)
    if args.json:
        print(json.dumps({"arch": arch.name, "variant": v.name, "stage": args.stage, "runs": [asdict(r) for r in rows]}, indent=2))
        return 0
    table = [
        (r.run_id, time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)), r.status, size_text(r.buffer_size),
         f"{statistics.median(r.minflt):g}", f"{min(r.minflt)}-{max(r.minflt)}", f"{statistics.median(r.majflt):g}")
        for r in rows
    ]  # fmt: skip
    print(f"{arch.name} {v.name} {args.stage}: minor faults per run (median, range) and major median")
    print(text_table(table, ("run", "started", "status", "buffer", "minflt", "range", "majflt")) if table else "no runs measured this cell")
    return 0
