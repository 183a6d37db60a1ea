"""The ``lab`` command line: parses arguments, calls the library, maps errors to exit codes.

Exit codes: 0 success; 1 something checked failed (a guest in ``lab run``,
a required ``lab doctor`` line, a command in ``lab exec`` exits with its own
status); 3 usage or config error; 4 infrastructure error (QEMU, apt, SSH);
130 interrupted (Ctrl-C or SIGTERM: guests are shut down first).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict
from types import FrameType

from lab import __version__, arches, cli_baselines, config, measure
from lab.boot import Booted, boot, new_log_dir
from lab.cli_results import cmd_export, cmd_report, cmd_run, cmd_runs
from lab.errors import LabError, UserError
from lab.toolchains import VARIANTS, select_variants
from lab.util import text_table

log = logging.getLogger("lab")

EPILOG = """exit codes: 0 ok; 1 a check or guest failed (lab exec: the command's own status);
3 usage or config error; 4 infrastructure error (QEMU, apt, SSH); 130 interrupted
lab compare / lab nightly: 0 no regression; 1 regression; 2 missing or errored cells;
3 usage or config error"""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so every ``finally`` (and QEMU shutdown) runs."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}", f"see {self.prog} --help")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="lab", description="Cross-architecture QEMU test lab.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action="version", version=f"lab {__version__}")
    p.add_argument("--config", help="config file (default: $LAB_CONFIG or ./lab.yaml)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging: full command lines")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def arch_opt(sp: argparse.ArgumentParser, multi: bool) -> None:
        if multi:
            sp.add_argument("--arch", help="all, or a comma-separated list (default: 'arches' in lab.yaml)")
        else:
            sp.add_argument("--arch", required=True, help="one of: " + ", ".join(arches.names()))
        sp.add_argument("--accel", choices=config.ACCELS, help="override 'accel' in lab.yaml")

    images = sub.add_parser("images", help="build and list guest images")
    isub = images.add_subparsers(dest="images_command", required=True, parser_class=_Parser)
    ib = isub.add_parser("build", help="resolve, download and build images (cached by content)")
    ib.add_argument("--arch", help="all, or a comma-separated list")
    ib.add_argument("--refresh", action="store_true", help="re-fetch the package lists first")
    il = isub.add_parser("list", help="show cached images")
    il.add_argument("--json", action="store_true")
    isub.add_parser("prune", help="delete cached images other than the current one per arch")

    arch_opt(sub.add_parser("boot", help="boot a guest and keep it up until Ctrl-C"), multi=False)
    arch_opt(sub.add_parser("shell", help="interactive shell in a fresh guest"), multi=False)
    xc = sub.add_parser("exec", help="run one command in a fresh guest; exits with its status")
    arch_opt(xc, multi=False)
    xc.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")

    pay = sub.add_parser("payloads", help="build and list the fault-probe variants")
    psub = pay.add_subparsers(dest="payloads_command", required=True, parser_class=_Parser)
    pb = psub.add_parser("build", help="cross-build the probe (cached by content)")
    pb.add_argument("--arch", help="all, or a comma-separated list")
    pb.add_argument("--variant", default="all", help="all, or a comma-separated list of " + ", ".join(v.name for v in VARIANTS))
    pl = psub.add_parser("list", help="show cached builds")
    pl.add_argument("--json", action="store_true")

    pr = sub.add_parser("probe", help="boot, run the probe variants --repeat times, print median faults per stage")
    arch_opt(pr, multi=True)
    pr.add_argument("--variant", default="all")
    pr.add_argument("--repeat", type=int, default=5)
    pr.add_argument("--size", default="1M", help="malloc'd buffer size (bytes, or K/M/G)")
    pr.add_argument("--json", action="store_true", help="print every run's parsed result as JSON")

    def run_options(p: argparse.ArgumentParser) -> None:
        arch_opt(p, multi=True)
        p.add_argument("--libc", help="glibc,musl (default: run.libc in lab.yaml)")
        p.add_argument("--linkage", help="static,dynamic (default: run.linkage in lab.yaml)")
        p.add_argument("--variant", help="explicit variants instead of --libc/--linkage, e.g. musl-static,glibc-dynamic")
        p.add_argument("--repeat", type=int, help="runs per variant (default: run.repeat)")
        p.add_argument("--jobs", type=int, help="guests at once (default: from cores and memory)")
        p.add_argument("--size", help="buffer sizes, e.g. 1M,8M (default: run.sizes)")
        p.add_argument("--out", help="results directory for the run directory (default: paths.results)")
        p.add_argument("--json", action="store_true", help="print the run summary as JSON")
        p.add_argument("--quiet", dest="run_quiet", action="store_true", help="no progress display (same as lab -q)")

    run_options(sub.add_parser("run", help="the matrix: every arch x variant x size, --repeat times, into the store and a report"))
    cli_baselines.add_parsers(sub, _Parser, run_options)

    runs = sub.add_parser("runs", help="runs in the results store")
    rsub = runs.add_subparsers(dest="runs_command", required=True, parser_class=_Parser)
    rl = rsub.add_parser("list", help="every run: id, status, cells, errors")
    rl.add_argument("--json", action="store_true")
    rs = rsub.add_parser("show", help="one run's facts and its start-up matrix")
    rs.add_argument("run", nargs="?", help="run id or unique prefix (default: the latest)")

    ex = sub.add_parser("export", help="every sample of a run as JSON or CSV")
    ex.add_argument("run", nargs="?", help="run id or unique prefix (default: the latest)")
    ex.add_argument("--format", choices=("json", "csv"), default="json")
    ex.add_argument("-o", "--output", help="file to write (default: stdout)")

    rep = sub.add_parser("report", help="render a run as HTML, Markdown or JSON")
    rep.add_argument("run", nargs="?", help="run id or unique prefix (default: the latest)")
    rep.add_argument("--format", choices=("html", "md", "json"), default="html")
    rep.add_argument("-o", "--output", help="file to write (default: stdout)")

    smoke = sub.add_parser("smoke", help="boot every selected arch and check what measurements rely on")
    arch_opt(smoke, multi=True)
    smoke.add_argument("--json", action="store_true", help="print the results as JSON")

    doc = sub.add_parser("doctor", help="check this host: QEMU, firmware, KVM, apt, disk, cache")
    doc.add_argument("--no-kvm", action="store_true", help="skip the KVM test boot")
    doc.add_argument("--json", action="store_true")
    return p


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="lab: %(message)s" if not verbose else "%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    # paramiko logs every retried banner read as an error; our own messages say what matters.
    logging.getLogger("paramiko").setLevel(logging.DEBUG if verbose else logging.CRITICAL)


def cmd_images(args: argparse.Namespace, cfg: config.Config) -> int:
    from lab.images import ImageStore

    store = ImageStore(cfg)
    if args.images_command == "build":
        for i, arch in enumerate(arches.select(args.arch or cfg.arches)):
            started = time.monotonic()
            image = store.ensure(arch, refresh=args.refresh and i == 0)
            print(f"{arch.name}: {image.dir} ({image.kernel_release}, {time.monotonic() - started:.1f}s)")
        return 0
    if args.images_command == "prune":
        for d in store.prune():
            print(f"deleted {d}")
        return 0
    rows = store.cached()
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
    print(text_table(table, ("arch", "kernel", "size", "entry", "built", "status")) if table else f"no images in {store.root}")
    return 0


def _booted(args: argparse.Namespace, cfg: config.Config) -> AbstractContextManager[Booted]:
    from lab.images import ImageStore

    arch = arches.get(args.arch)
    image = ImageStore(cfg).ensure(arch)
    return boot(cfg, image, args.accel, new_log_dir(cfg, arch.name))


def _ssh_argv(b: Booted) -> list[str]:
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
    from lab.images import ImageStore
    from lab.smoke import smoke

    selected = arches.select(args.arch or cfg.arches)
    store = ImageStore(cfg)
    results = [smoke(cfg, arch, store, args.accel) for arch in selected]
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


def cmd_payloads(args: argparse.Namespace, cfg: config.Config) -> int:
    from lab.payloads import PayloadStore

    store = PayloadStore(cfg)
    if args.payloads_command == "build":
        for arch in arches.select(args.arch or cfg.arches):
            for v in select_variants(args.variant):
                p = store.ensure(arch, v)
                print(f"{arch.name:<8} {v.name:<14} {p.info['toolchain']} {p.info['toolchain_version']:<8} {p.binary}")
        return 0
    rows = store.cached()
    if args.json:
        print(json.dumps([{**r, "dir": str(r["dir"])} for r in rows], indent=2))
        return 0
    table = [
        (
            r["arch"],
            r["variant"],
            f"{r['toolchain']} {r['toolchain_version']}",
            r["elf"]["sizes"]["file"],
            r["elf"]["interpreter"] or "-",
            "yes" if r["elf"]["pie"] else "no",
            r["sha256"][:16],
        )
        for r in rows
    ]
    print(
        text_table(table, ("arch", "variant", "toolchain", "bytes", "interpreter", "pie", "sha256"))
        if table
        else f"no payloads in {store.root}"
    )
    return 0


def cmd_probe(args: argparse.Namespace, cfg: config.Config) -> int:
    from lab.images import ImageStore
    from lab.payloads import PayloadStore

    if args.repeat < 1:
        raise UserError(f"--repeat {args.repeat} is not valid", "use 1 or more (5 gives a useful median)")
    size = measure.parse_size(args.size)
    variants = select_variants(args.variant)
    images, payloads = ImageStore(cfg), PayloadStore(cfg)
    dump = []
    for arch in arches.select(args.arch or cfg.arches):
        built = [payloads.ensure(arch, v) for v in variants]
        with boot(cfg, images.ensure(arch), args.accel) as b:
            runs = measure.run_matrix(b.guest, measure.install(b.guest, built), size, args.repeat)
        dump += [{"arch": arch.name, "variant": r.variant, "repeat": r.repeat, **asdict(r.result)} for r in runs]
        if not args.json:
            summary = measure.summarize(runs)
            stages = list(next(iter(summary.values())))
            rows = [(arch.name, v, *(f"{m[0]:g}/{m[1]:g}" for m in per.values())) for v, per in summary.items()]
            print(text_table(rows, ("arch", "variant", *stages)))
            print(f"({b.info.accel}; median minor/major faults per stage over {args.repeat} runs, buffer {size} bytes)\n")
    if args.json:
        print(json.dumps(dump, indent=2))
    return 0


def cmd_doctor(args: argparse.Namespace, cfg: config.Config) -> int:
    from lab.doctor import run_checks

    checks = run_checks(cfg, kvm=not args.no_kvm)
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        print(text_table([(c.name, c.status, c.detail, c.remedy) for c in checks], ("check", "status", "detail", "remedy")))
    return 1 if any(c.status == "FAIL" for c in checks) else 0


COMMANDS = {
    "run": cmd_run,
    "runs": cmd_runs,
    "baseline": cli_baselines.cmd_baseline,
    "compare": cli_baselines.cmd_compare,
    "nightly": cli_baselines.cmd_nightly,
    "history": cli_baselines.cmd_history,
    "export": cmd_export,
    "report": cmd_report,
    "smoke": cmd_smoke,
    "payloads": cmd_payloads,
    "probe": cmd_probe,
    "images": cmd_images,
    "boot": cmd_boot,
    "shell": cmd_shell,
    "exec": cmd_exec,
    "doctor": cmd_doctor,
}


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        args = build_parser().parse_args(argv)
        _setup_logging(args.verbose, args.quiet)
        cfg = config.load(args.config)
        return COMMANDS[args.command](args, cfg)
    except LabError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        if exc.details and logging.getLogger().isEnabledFor(logging.DEBUG):
            print(exc.details, file=sys.stderr)
        for path in exc.logs:
            print(f"lab: log: {path}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, Terminated):
        print("lab: interrupted; guests were shut down", file=sys.stderr)
        return 130
