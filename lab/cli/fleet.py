"""Fleet commands: fleet provision, fleet run, fleet nightly (lab across an Ansible inventory's hosts)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from lab import api, config
from lab.cli import baselines
from lab.cli.common import Handler, Parser, run_options, run_request
from lab.text import text_table


def add_parsers(sub: argparse._SubParsersAction[Parser]) -> dict[str, Handler]:
    fleet = sub.add_parser("fleet", help="several lab hosts from an Ansible inventory: provision them, run the matrix across them")
    fsub = fleet.add_subparsers(dest="fleet_command", required=True, parser_class=Parser)
    inv_help = "Ansible inventory whose lab_hosts group holds the lab hosts (see ansible/inventory.example.yml)"

    p = fsub.add_parser("provision", help="make every inventory host a lab host at this lab's version (the Ansible role; idempotent)")
    p.add_argument("--inventory", "-i", required=True, help=inv_help)
    p.add_argument("--limit", help="only these hosts (comma-separated)")
    p.add_argument("--json", action="store_true")

    r = fsub.add_parser("run", help="the matrix over the hosts (each arch on one host, KVM hosts first), merged into one run here")
    r.add_argument("--inventory", "-i", required=True, help=inv_help)
    run_options(r)

    n = fsub.add_parser(
        "nightly", help="lab nightly with the matrix run over the hosts; a host that fails makes its cells missing (exit 2)"
    )
    n.add_argument("--inventory", "-i", required=True, help=inv_help)
    baselines.nightly_options(n)
    return {"fleet": cmd_fleet}


def cmd_fleet(args: argparse.Namespace, cfg: config.Config) -> int:
    inventory = Path(args.inventory)
    if args.fleet_command == "provision":
        limit = tuple(h.strip() for h in args.limit.split(",") if h.strip()) if args.limit else ()
        done = api.fleet_provision(cfg, inventory, limit)
        if args.json:
            print(json.dumps({"wheel": str(done.wheel), "hosts": {h: asdict(o) for h, o in done.hosts.items()}}, indent=2))
        else:
            rows = [(h, o.ok, o.changed, o.unreachable, o.failures, o.why or "-") for h, o in sorted(done.hosts.items())]
            print(text_table(rows, ("host", "ok", "changed", "unreachable", "failed", "why"), right_from=1))
            print(f"lab on the hosts: {done.wheel.name}")
        return 0 if done.ok else 4
    if args.fleet_command == "nightly":
        return baselines.cmd_nightly(args, cfg, fleet=inventory)
    result = api.fleet_run(cfg, run_request(args), inventory)
    s = result.summary
    if args.json:
        print(json.dumps(api.summary_dict(result), indent=2))
    else:
        print(f"fleet run {s.run_id}: {s.status}, {s.cells} cell(s), {s.errors} error(s) in {s.seconds:.1f}s")
        print(f"run directory: {s.run_dir}")
        if result.reports:
            print("report: " + " ".join(str(p) for p in result.reports))
    return 0 if s.status == "complete" else 1
