"""The ``lab`` command line: parses arguments, calls the library (:mod:`lab.api`), maps errors to exit codes.

One module per command group: :mod:`~lab.cli.guests` (images, boot, shell,
exec, smoke, doctor), :mod:`~lab.cli.payloads` (payloads, probe),
:mod:`~lab.cli.runs` (run, runs, export, report) and
:mod:`~lab.cli.baselines` (baseline, compare, nightly, history).

Exit codes: 0 success; 1 something checked failed (a guest in ``lab run``,
a required ``lab doctor`` line, a command in ``lab exec`` exits with its own
status); 3 usage or config error; 4 infrastructure error (QEMU, apt, SSH);
130 interrupted (Ctrl-C or SIGTERM: guests are shut down first).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sqlite3
import sys
import traceback
from collections.abc import Sequence
from types import FrameType

import shtab

from lab import config
from lab.cli import baselines, explain, fleet, guests, payloads, runs
from lab.cli.common import Handler, Parser
from lab.errors import LabError
from lab.version import __version__

log = logging.getLogger("lab")
GROUPS = (runs, baselines, fleet, guests, payloads, explain)

EPILOG = """exit codes: 0 ok; 1 a check or guest failed (lab exec: the command's own status);
3 usage or config error; 4 infrastructure error (QEMU, apt, SSH); 130 interrupted
lab compare / lab nightly: 0 no regression; 1 regression; 2 missing or errored cells;
3 usage or config error"""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so every ``finally`` (and QEMU shutdown) runs."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    p = Parser(
        prog="lab", description="Cross-architecture QEMU test lab.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action="version", version=f"lab {__version__}")
    p.add_argument("--config", help="config file (default: $LAB_CONFIG, ./lab.yaml, or $XDG_CONFIG_HOME/lab/lab.yaml)")
    p.add_argument(
        "--results", metavar="DIR", help="results directory: run directories and the store (default: paths.results, or $LAB_RESULTS)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging: full command lines")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    handlers: dict[str, Handler] = {}
    for group in GROUPS:
        handlers.update(group.add_parsers(sub))
    comp = sub.add_parser("completion", help='print a shell completion script: eval "$(lab completion bash)"')
    comp.add_argument("shell", choices=("bash", "zsh"))
    return p, handlers


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    fmt = "lab: %(message)s" if not verbose else "%(asctime)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr, force=True)
    # paramiko logs every retried banner read as an error; our own messages say what matters.
    logging.getLogger("paramiko").setLevel(logging.DEBUG if verbose else logging.CRITICAL)


def _tolerant_streams() -> None:
    """Output to a stream that cannot encode a character (PYTHONIOENCODING=ascii, LC_ALL=C with a non-ASCII path)
    escapes it instead of failing a finished run with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    _tolerant_streams()
    try:
        parser, handlers = build_parser()
        args = parser.parse_args(argv)
        _setup_logging(args.verbose, args.quiet)
        if args.command == "completion":  # needs no config
            print(shtab.complete(parser, shell=args.shell))
            return 0
        cfg = config.load(args.config, args.results)
        return handlers[args.command](args, cfg)
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
    except BrokenPipeError:  # `lab ... | head`: the reader left; say nothing, like any Unix tool
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as exc:  # the host refused something lab did not expect to fail: still one line, exit 4
        where = f"{exc.filename}: " if exc.filename else ""
        return _unexpected(f"{where}{exc.strerror or exc}", "check free space, permissions and the paths in lab.yaml", exc)
    except sqlite3.Error as exc:
        return _unexpected(f"results store: {exc}", "move a damaged store aside (lab creates a new one)", exc)
    except Exception as exc:
        return _unexpected(
            f"internal error: {type(exc).__name__}: {exc}", "this is a bug in lab: run again with -v and report the traceback", exc
        )


def _unexpected(message: str, remedy: str, exc: BaseException) -> int:
    """Exit 4 with one line; the traceback only with -v (exit 1 stays reserved for failed checks)."""
    print(f"lab: error: {message} ({remedy})", file=sys.stderr)
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        traceback.print_exception(exc)
    return 4
