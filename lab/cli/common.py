"""What every command group shares: the parser class, option helpers, request builders, output."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from lab import arches, axes, config
from lab.api import RunRequest
from lab.errors import UserError
from lab.files import write_atomic
from lab.payloads import variants

Handler = Callable[[argparse.Namespace, config.Config], int]
SubParsers = "argparse._SubParsersAction[Parser]"


class Parser(argparse.ArgumentParser):
    """Usage errors become :class:`UserError` (exit 3, one line), never argparse's exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}", f"see {self.prog} --help")


def arch_option(p: argparse.ArgumentParser, multi: bool) -> None:
    if multi:
        p.add_argument("--arch", help="all, or a comma-separated list (default: 'arches' in lab.yaml)")
    else:
        p.add_argument("--arch", required=True, help="one of: " + ", ".join(arches.names()))
    p.add_argument("--accel", choices=config.ACCELS, help="override 'accel' in lab.yaml")


def run_options(p: argparse.ArgumentParser) -> None:
    """The options of lab run (and lab nightly), mirrored by :class:`lab.measure.plan.RunRequest`."""
    arch_option(p, multi=True)
    p.add_argument("--libc", help=",".join(variants.libcs()) + " (default: run.libc in lab.yaml)")
    p.add_argument("--linkage", help=",".join(variants.linkages()) + " (default: run.linkage in lab.yaml)")
    p.add_argument("--variant", help="explicit variants instead of --libc/--linkage, e.g. " + ",".join(variants.names()[:2]))
    p.add_argument("--repeat", type=int, help="runs per variant (default: run.repeat)")
    p.add_argument("--jobs", type=int, help="guests at once (default: from cores and memory)")
    p.add_argument("--size", help="buffer sizes, e.g. 1M,8M (default: run.sizes)")
    p.add_argument("--suite", help="Debian suites of the guests' userland and libc, e.g. trixie,forky (same as --axis suite=...)")
    p.add_argument("--axis", action="append", default=[], metavar="NAME=V1,V2",
                   help="measure along an axis (repeatable): " + ", ".join(f"{a.name}" for a in axes.AXES) + "; e.g. thp=never,always")  # fmt: skip
    p.add_argument("--kernel", metavar="FILE", help="boot your own kernel (vmlinux, Image or bzImage) instead of Debian's (guest.kernel)")
    p.add_argument("--modules", metavar="DIR|DEB", help="its modules: lib/modules/RELEASE, a tree holding it, or a .deb (guest.modules)")
    p.add_argument("--out", help="results directory for the run directory (default: paths.results)")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.add_argument("--quiet", dest="run_quiet", action="store_true", help="no progress display (same as lab -q)")
    p.add_argument("--cold-boot", action="store_true", help="boot every guest cold instead of restoring its snapshot (guest.snapshots)")
    p.add_argument("--explain", action="store_true", help="also trace each cell once and attribute its faults (lab explain); stored apart")


def run_request(args: argparse.Namespace) -> RunRequest:
    return RunRequest(
        arch=args.arch,
        libc=getattr(args, "libc", None),
        linkage=getattr(args, "linkage", None),
        variant=args.variant,
        repeat=args.repeat,
        jobs=getattr(args, "jobs", None),
        size=args.size,
        accel=args.accel,
        out=Path(args.out) if getattr(args, "out", None) else None,
        explain=bool(getattr(args, "explain", False)),
        cold_boot=bool(getattr(args, "cold_boot", False)),
        kernel=Path(args.kernel) if getattr(args, "kernel", None) else None,
        modules=Path(args.modules) if getattr(args, "modules", None) else None,
        axis=tuple(getattr(args, "axis", None) or ()) + ((f"suite={args.suite}",) if getattr(args, "suite", None) is not None else ()),
    )


def output(text: str, path: str | None) -> None:
    """``text`` to ``path`` (atomically) or to stdout."""
    if path:
        write_atomic(Path(path), text)
        print(f"wrote {path}", file=sys.stderr)
    else:
        sys.stdout.write(text)
