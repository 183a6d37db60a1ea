"""Progress of a run: a live per-arch display on a terminal, plain log lines elsewhere.

On a terminal, one owner draws it: rich's live display, with every log record
routed through the same console (printed above the display), so log lines and
redraws never interleave. Elsewhere, or with ``--quiet``, each change is one
plain line (or nothing). Use it as a context manager around the run.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table


class _ConsoleHandler(logging.Handler):
    """Log records printed through the live display's console, above the display."""

    def __init__(self, console: Console, formatter: logging.Formatter | None) -> None:
        super().__init__()
        self.console = console
        self.setFormatter(formatter or logging.Formatter("lab: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(self.format(record), markup=False, highlight=False, soft_wrap=True)
        except Exception:  # logging must never break a run
            self.handleError(record)


class Progress:
    """Thread-safe per-arch status; ``live`` draws a table in place, otherwise plain lines."""

    def __init__(self, arches: list[str], live: bool, quiet: bool = False, stream: TextIO = sys.stderr) -> None:
        self.arches, self.live, self.quiet, self.stream = arches, live, quiet, stream
        self.state = dict.fromkeys(arches, "waiting")
        self.started = time.monotonic()
        self.since = dict.fromkeys(arches, self.started)
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._saved: list[logging.Handler] = []

    @classmethod
    def for_stream(cls, arches: list[str], quiet: bool, stream: TextIO = sys.stderr) -> Progress:
        return cls(arches, live=stream.isatty() and not quiet, quiet=quiet, stream=stream)

    def _table(self) -> Table:
        table = Table.grid(padding=(0, 2))
        now = time.monotonic()
        for arch in self.arches:
            table.add_row(f"  {arch:<8}", f"{self.state[arch]:<28}", f"{now - self.since[arch]:6.1f}s")
        return table

    def __enter__(self) -> Progress:
        if self.live:
            console = Console(file=self.stream, highlight=False)
            self._live = Live(get_renderable=self._table, console=console, refresh_per_second=4, transient=False)
            root = logging.getLogger()
            self._saved = list(root.handlers)
            formatter = self._saved[0].formatter if self._saved else None
            root.handlers = [_ConsoleHandler(console, formatter)]
            self._live.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.stop()
            logging.getLogger().handlers = self._saved
            self._live = None

    def update(self, arch: str, state: str) -> None:
        with self._lock:
            if self.state[arch].split()[0] != state.split()[0]:
                self.since[arch] = time.monotonic()
            self.state[arch] = state
            if self._live is not None:
                self._live.refresh()
            elif not self.quiet and not self.live:
                print(f"lab: {arch}: {state} ({time.monotonic() - self.started:.1f}s)", file=self.stream, flush=True)
