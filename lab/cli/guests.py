"""Guest commands: images, boot, shell, exec, smoke, doctor."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import subprocess
import time
from contextlib import AbstractContextManager
from dataclasses import asdict

from lab import api, config
from lab.cli.common import Handler, Parser, arch_option
from lab.errors import UserError
from lab.text import text_table

log = logging.getLogger("lab")


def add_parsers(sub: argparse._SubParsersAction[Parser]) -> dict[str, Handler]:
    images = sub.add_parser("images", help="build and list guest images")
    isub = images.add_subparsers(dest="images_command", required=True, parser_class=Parser)
    ib = isub.add_parser("build", help="resolve, download and build images (cached by content)")
    ib.add_argument("--arch", help="all, or a comma-separated list")
    ib.add_argument("--refresh", action="store_true", help="re-fetch the package lists first")
    il = isub.add_parser("list", help="show cached images")
    il.add_argument("--json", action="store_true")
    isub.add_parser("prune", help="delete cached images other than the current one per arch")

    arch_option(sub.add_parser("boot", help="boot a guest and keep it up until Ctrl-C"), multi=False)
    arch_option(sub.add_parser("shell", help="interactive shell in a fresh guest"), multi=False)
    xc = sub.add_parser("exec", help="run one command in a fresh guest; exits with its status")
    arch_option(xc, multi=False)
    xc.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")

    sm = sub.add_parser("smoke", help="boot every selected arch and check what measurements rely on")
    arch_option(sm, multi=True)
    sm.add_argument("--json", action="store_true", help="print the results as JSON")

    doc = sub.add_parser("doctor", help="check this host: QEMU, firmware, KVM, apt, disk, cache")
    doc.add_argument("--no-kvm", action="store_true", help="skip the KVM test boot")
    doc.add_argument("--json", action="store_true")
    return {"images": cmd_images, "boot": cmd_boot, "shell": cmd_shell, "exec": cmd_exec, "smoke": cmd_smoke, "doctor": cmd_doctor}


def cmd_images(args: argparse.Namespace, cfg: config.Config) -> int:
    if args.images_command == "build":
        for arch, image, seconds in api.images_build(cfg, args.arch, args.refresh):
            print(f"{arch.name}: {image.dir} ({image.kernel_release}, {seconds:.1f}s)")
        return 0
    if args.images_command == "prune":
        for d in api.prune_images(cfg):
            print(f"deleted {d}")
        return 0
    root, rows = api.images_list(cfg)
    if args.json:
        print(json.dumps([{"dir": str(r.dir), "status": r.status, "manifest": r.manifest} for r in rows], indent=2))
        return 0
    table = [
        (
            r.manifest.get("arch", "?"),
            r.manifest.get("kernel_release", "?"),
            f"{r.size / 2**20:.1f} MiB",
            r.dir.name,
            r.manifest.get("built_at", "?"),
            r.status,
        )
        for r in rows
    ]
    print(text_table(table, ("arch", "kernel", "size", "entry", "built", "status")) if table else f"no images in {root}")
    return 0


def _booted(args: argparse.Namespace, cfg: config.Config) -> AbstractContextManager[api.Booted]:
    return api.booted(cfg, args.arch, args.accel)


def _ssh_argv(b: api.Booted) -> list[str]:
    """An ssh command line for a booted guest, with its pinned host key written next to the console log."""
    known = b.info.console_log.parent / "known_hosts"
    known.write_text(b.guest.known_hosts_line() + "\n")
    return b.guest.ssh_argv(known)


def cmd_boot(args: argparse.Namespace, cfg: config.Config) -> int:
    with _booted(args, cfg) as b:
        print(f"{b.info.arch} is up ({b.info.accel_note}) in {b.info.ssh_seconds:.1f}s; console log: {b.info.console_log}")
        print("connect with:  " + shlex.join(_ssh_argv(b)))
        print("Ctrl-C shuts it down.", flush=True)
        while b.vm.returncode is None:
            time.sleep(0.5)
        log.error("%s: QEMU exited by itself with status %s; see %s", b.info.arch, b.vm.returncode, b.info.console_log)
        return 4


def cmd_shell(args: argparse.Namespace, cfg: config.Config) -> int:
    with _booted(args, cfg) as b:
        argv = _ssh_argv(b)
        try:
            return subprocess.run([*argv[:-1], "-t", argv[-1]], check=False).returncode
        except FileNotFoundError:
            raise UserError("ssh not found", "install openssh-client, or use lab exec") from None


def cmd_exec(args: argparse.Namespace, cfg: config.Config) -> int:
    argv = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not argv:
        raise UserError("lab exec: no command given", "usage: lab exec --arch X -- COMMAND [ARGS...]")
    with _booted(args, cfg) as b:
        result = b.guest.run(shlex.join(argv), hide=False)
        return int(result.exited)


def cmd_smoke(args: argparse.Namespace, cfg: config.Config) -> int:
    results = api.smoke(cfg, args.arch, args.accel)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        rows = []
        for r in results:
            facts = dict(r.facts)
            detail = (
                "; ".join(r.problems) or r.error or f"{facts.get('kernel')} page={facts.get('page_size')} scratch={facts.get('scratch')}"
            )
            rows.append((r.arch, "ok" if r.ok else "FAILED", r.accel or "-", f"{r.ssh_seconds:.2f}s" if r.ssh_seconds else "-", detail))
        print(text_table(rows, ("arch", "result", "accel", "boot-to-ssh", "detail")))
        for r in results:
            if not r.ok and r.console_log:
                print(f"{r.arch}: logs: {r.console_log}")
    return 0 if all(r.ok for r in results) else 1


def cmd_doctor(args: argparse.Namespace, cfg: config.Config) -> int:
    checks = api.doctor(cfg, kvm=not args.no_kvm)
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        print(text_table([(c.name, c.status, c.detail, c.remedy) for c in checks], ("check", "status", "detail", "remedy")))
    return 1 if any(c.status == "FAIL" for c in checks) else 0
