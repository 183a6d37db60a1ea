"""Payload commands: payloads build/list, and probe (a quick view over the measuring engine)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from lab import api, config
from lab.cli.common import Handler, Parser, arch_option, run_request
from lab.payloads.variants import names
from lab.text import text_table


def add_parsers(sub: argparse._SubParsersAction[Parser]) -> dict[str, Handler]:
    pay = sub.add_parser("payloads", help="build and list the fault-probe variants")
    psub = pay.add_subparsers(dest="payloads_command", required=True, parser_class=Parser)
    pb = psub.add_parser("build", help="cross-build the probe (cached by content)")
    pb.add_argument("--arch", help="all, or a comma-separated list")
    pb.add_argument("--variant", default="all", help="all, or a comma-separated list of " + ", ".join(names()))
    pl = psub.add_parser("list", help="show cached builds")
    pl.add_argument("--json", action="store_true")

    pr = sub.add_parser("probe", help="boot, run the probe variants --repeat times, print median faults per stage (nothing stored)")
    arch_option(pr, multi=True)
    pr.add_argument("--variant", default="all")
    pr.add_argument("--repeat", type=int, default=5)
    pr.add_argument("--size", default="1M", help="malloc'd buffer size (bytes, or K/M/G)")
    pr.add_argument("--json", action="store_true", help="print every run's parsed result as JSON")
    return {"payloads": cmd_payloads, "probe": cmd_probe}


def cmd_payloads(args: argparse.Namespace, cfg: config.Config) -> int:
    if args.payloads_command == "build":
        for arch, v, p in api.payloads_build(cfg, args.arch, args.variant):
            name = v.name if p.program.binary == "fault-probe" else p.program.binary
            print(f"{arch.name:<8} {name:<14} {v.libc} {p.info.get('libc_version', '?'):<6} {p.info['toolchain_version']}  {p.binary}")
        return 0
    root, rows = api.payloads_list(cfg)
    if args.json:
        print(json.dumps([{**r, "dir": str(r["dir"])} for r in rows], indent=2))
        return 0
    table = []
    for r in rows:
        if r["status"] != "ok" and "elf" not in r:
            table.append((r.get("arch", "?"), r.get("variant", "?"), "?", "?", "?", "?", r["status"]))
            continue
        elf = r["elf"]
        pie = "yes" if elf["pie"] else "no"
        status = r["sha256"][:16] if r["status"] == "ok" else r["status"]
        table.append(
            (
                r["arch"],
                r["variant"] if r.get("program", "fault-probe") == "fault-probe" else f"{r['variant']} ({r['program']})",
                r["toolchain_version"],
                elf["sizes"]["file"],
                elf["interpreter"] or "-",
                pie,
                status,
            )
        )
    header = ("arch", "variant", "toolchain", "bytes", "interpreter", "pie", "sha256")
    print(text_table(table, header) if table else f"no payloads in {root}")
    return 0


def cmd_probe(args: argparse.Namespace, cfg: config.Config) -> int:
    req = run_request(args)
    runs, medians = api.probe(cfg, req)
    if args.json:
        print(json.dumps([{"arch": r.arch, "variant": r.variant, "repeat": r.repeat, **asdict(r.result)} for r in runs], indent=2))
        return 0
    plan = api.plan(cfg, req)
    accel = {r.arch: r.accel for r in runs}
    for arch, per_variant in medians.items():
        stages = list(next(iter(per_variant.values())))
        rows = [(arch, v, *(f"{m[0]:g}/{m[1]:g}" for m in per.values())) for v, per in per_variant.items()]
        print(text_table(rows, ("arch", "variant", *stages)))
        print(f"({accel[arch]}; median minor/major faults per stage over {plan.repeat} runs, buffer {plan.sizes[0]} bytes)\n")
    return 0
