"""``lab explain``: where every fault of a traced run comes from, per object, section and function."""

from __future__ import annotations

import argparse
from pathlib import Path

from lab import api, axes, config
from lab.cli.common import Handler, Parser, arch_option, output, run_request
from lab.errors import UserError
from lab.payloads import variants
from lab.progress import Progress


def add_parsers(sub: argparse._SubParsersAction[Parser]) -> dict[str, Handler]:
    ex = sub.add_parser(
        "explain",
        help="trace the probe (or -- PROGRAM) and attribute every page fault to an object, section and function",
        description="Trace each cell once with fault-trace (perf_event_open in the guest) and attribute every fault; "
        "untraced runs of the same cells check that tracing did not change the counts. Nothing is stored.",
    )
    arch_option(ex, multi=True)
    ex.add_argument("--libc", help=",".join(variants.libcs()))
    ex.add_argument("--linkage", help=",".join(variants.linkages()))
    ex.add_argument("--variant", help="comma-separated list of " + ", ".join(variants.names()))
    ex.add_argument("--size", help="buffer size (default: run.sizes)")
    ex.add_argument("--repeat", type=int, default=3, help="untraced runs per cell to check the traced one against (default 3)")
    ex.add_argument("--suite", help="Debian suite of the guests' userland, e.g. forky")
    ex.add_argument("--axis", action="append", default=[], metavar="NAME=V1,V2", help="as lab run: " + ", ".join(a.name for a in axes.AXES))
    ex.add_argument("--stage", help="one stage of the probe (entry, malloc, touch1, ...; default: all)")
    ex.add_argument("--format", choices=api.EXPLAIN_FORMATS, default="table")
    ex.add_argument(
        "--diff", nargs=2, metavar=("CELL_A", "CELL_B"), help="where two cells differ, e.g. arm64:glibc-dynamic arm64:musl-dynamic"
    )
    ex.add_argument("--top", type=int, default=10, help="functions to list per cell")
    ex.add_argument("--put", help="upload this cross-built binary and trace it (name it after --, or it runs without arguments)")
    ex.add_argument("-o", "--output", help="file to write (default: stdout)")
    ex.add_argument("program", nargs="*", help="after --: a program in the image and its arguments, traced instead of the probe")
    return {"explain": cmd_explain}


def cmd_explain(args: argparse.Namespace, cfg: config.Config) -> int:
    if args.diff and (args.program or args.put):
        raise UserError("--diff compares probe cells, not a program", "drop -- PROGRAM/--put, or drop --diff")
    if args.stage and (args.program or args.put):
        raise UserError("--stage needs the probe's stages; a program has one stage", "drop --stage")
    args.jobs, args.out = None, None
    req = api.ExplainRequest(
        run=run_request(args),
        program=tuple(args.program),
        put=Path(args.put) if args.put else None,
        diff=(args.diff[0], args.diff[1]) if args.diff else None,
    )
    labels = api.explain_labels(cfg, req)  # unknown cells and bad options fail before anything boots
    with Progress.for_stream(labels, quiet=args.quiet or args.format == "json") as progress:
        explained = api.explain(cfg, req, progress.update)
    stage = api.stage_of(explained, args.stage)
    if req.diff:
        a, b = explained
        output(api.diff_text(a, b, args.format, stage), args.output)
        return 0 if a.ok and b.ok else 1
    output(api.explain_text(explained, args.format, stage, args.top), args.output)
    return 0 if all(e.ok for e in explained) else 1
