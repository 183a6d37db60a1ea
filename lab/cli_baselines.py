"""The nightly side of the command line: baseline, compare, nightly, history."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from lab import baselines, compare, config, report
from lab.cli_results import execute_run, output
from lab.errors import UserError
from lab.store import Store
from lab.util import text_table, write_atomic
from lab.verdict import Tolerance


def add_parsers(sub: argparse._SubParsersAction, parser_class: type[argparse.ArgumentParser], add_run_options: object) -> None:  # type: ignore[type-arg]
    b = sub.add_parser("baseline", help="save, list, show, export, import, delete baselines")
    bsub = b.add_subparsers(dest="baseline_command", required=True, parser_class=parser_class)
    save = bsub.add_parser("save", help="keep a run's distributions and environments as baseline NAME")
    save.add_argument("name")
    save.add_argument("--run", help="run id or prefix (default: the latest complete run)")
    bsub.add_parser("list", help="every baseline: name, source run, created")
    for verb, text in (
        ("show", "a baseline's cells and entry medians"),
        ("export", "print a baseline as YAML (to keep in git)"),
        ("delete", "delete a baseline"),
    ):
        bsub.add_parser(verb, help=text).add_argument("name")
    imp = bsub.add_parser("import", help="load a baseline YAML file (from lab baseline export)")
    imp.add_argument("file")
    imp.add_argument("--replace", action="store_true", help="overwrite a baseline of the same name")

    c = sub.add_parser("compare", help="verdicts: a run against a baseline, or run A against run B")
    c.add_argument("runs", nargs="*", help="[RUN] with --baseline (default: the latest run), or RUN_A RUN_B")
    c.add_argument("--baseline", help="baseline name")
    _verdict_options(c)

    n = sub.add_parser("nightly", help="run, compare with the baseline, write report + JUnit into a dated directory, prune old runs")
    n.add_argument("--baseline", help="baseline name (default: nightly.baseline in lab.yaml)")
    _verdict_options(n, formats=False)
    add_run_options(n)  # type: ignore[operator]

    h = sub.add_parser("history", help="one cell's stage across runs")
    h.add_argument("--arch", required=True)
    h.add_argument("--variant", required=True)
    h.add_argument("--stage", default="entry")
    h.add_argument("--size", help="buffer size (default: every size)")
    h.add_argument("--last", type=int, default=20)


def _verdict_options(p: argparse.ArgumentParser, formats: bool = True) -> None:
    p.add_argument("--tolerance-faults", type=float, help="override compare.faults for every stage")
    p.add_argument("--tolerance-percent", type=float, help="override compare.percent for every stage")
    if formats:
        p.add_argument("--format", choices=("table", "json"), default="table")
        p.add_argument("--junit", help="also write JUnit XML to this file")
        p.add_argument("--all", action="store_true", help="list unchanged stages too")


def cmd_baseline(args: argparse.Namespace, cfg: config.Config) -> int:
    with Store(cfg.run.store) as store:
        verb = args.baseline_command
        if verb == "save":
            run_id, count = baselines.save(store, args.name, args.run)
            print(f"baseline {args.name}: {count} cell(s) from run {run_id}")
        elif verb == "list":
            listed = [(n, src, time.strftime("%Y-%m-%d %H:%M", time.localtime(t))) for n, t, src in store.baselines()]
            print(text_table(listed, ("name", "source run", "created")) if listed else f"no baselines in {cfg.run.store}")
        elif verb == "show":
            source, cells = baselines.load(store, args.name)
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
            sys.stdout.write(store.baseline_document(args.name))
        elif verb == "import":
            print(f"imported baseline {baselines.import_file(store, Path(args.file), args.replace)}")
        else:
            store.delete_baseline(args.name)
            print(f"deleted baseline {args.name}")
    return 0


def _tolerance(args: argparse.Namespace, cfg: config.Config) -> tuple[Tolerance, dict[str, Tolerance]]:
    return compare.tolerance(cfg, args.tolerance_faults, args.tolerance_percent)


def cmd_compare(args: argparse.Namespace, cfg: config.Config) -> int:
    with Store(cfg.run.store) as store:
        if args.baseline:
            if len(args.runs) > 1:
                raise UserError("lab compare --baseline takes at most one run", "lab compare [RUN] --baseline NAME")
            result = compare.against_baseline(store, args.baseline, args.runs[0] if args.runs else None, _tolerance(args, cfg))
        elif len(args.runs) == 2:
            result = compare.between_runs(store, args.runs[0], args.runs[1], _tolerance(args, cfg))
        else:
            raise UserError(
                "lab compare needs --baseline NAME or two runs", "lab compare [RUN] --baseline NAME, or lab compare RUN_A RUN_B"
            )
    output(compare.to_json(result) if args.format == "json" else compare.table(result, args.all), None)
    if args.junit:
        write_atomic(Path(args.junit), compare.to_junit(result))
    return result.exit_code


def cmd_nightly(args: argparse.Namespace, cfg: config.Config) -> int:
    name = args.baseline or cfg.nightly.baseline
    with Store(cfg.run.store) as store:
        store.baseline_document(name)  # fail before an hour of running if it does not exist
    summary = execute_run(args, cfg, write_reports=False)
    stamp = time.strftime("%Y-%m-%d-%H%M%S")
    out_dir = cfg.nightly.dir / stamp
    with Store(cfg.run.store) as store:
        result = compare.against_baseline(store, name, summary.run_id, _tolerance(args, cfg))
        rep = report.build(store, summary.run_id)
        files = compare.write_nightly(out_dir, result, report.render(rep, "html", result), report.render(rep, "md", result))
        report.write_run_reports(store, summary.run_id, summary.run_dir, result)
        pruned = compare.prune_runs(store, cfg.results_dir / "runs", cfg.nightly.keep_runs)
    (out_dir / "run").symlink_to(summary.run_dir)
    sys.stdout.write(compare.table(result))
    print(
        f"\nnightly: {out_dir} ({', '.join(p.name for p in files)}); pruned {len(pruned)} old run director{'y' if len(pruned) == 1 else 'ies'}"
    )
    return result.exit_code


def cmd_history(args: argparse.Namespace, cfg: config.Config) -> int:
    from lab import arches, measure
    from lab.toolchains import variant

    arch, v = arches.get(args.arch), variant(args.variant)
    size = measure.parse_size(args.size) if args.size else None
    with Store(cfg.run.store) as store:
        rows = store.history(arch.name, v.name, args.stage, size, args.last)
        statuses = {r.id: r.status for r in store.runs()}
    table = [
        (run_id, time.strftime("%Y-%m-%d %H:%M", time.localtime(started)), statuses.get(run_id, "?"), report.size_text(sz),
         f"{statistics.median(mins):g}", f"{min(mins)}-{max(mins)}", f"{statistics.median(majs):g}")
        for run_id, started, sz, mins, majs in rows
    ]  # fmt: skip
    print(f"{arch.name} {v.name} {args.stage}: minor faults per run (median, range) and major median")
    print(text_table(table, ("run", "started", "status", "buffer", "minflt", "range", "majflt")) if table else "no runs measured this cell")
    return 0
