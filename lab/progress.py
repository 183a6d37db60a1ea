"""Progress of a run: a live per-arch display on a terminal, plain log lines elsewhere."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Progress:
    """Thread-safe per-arch status. ``live`` redraws a block of lines in place (ANSI)."""

    def __init__(self, arches: list[str], live: bool, quiet: bool = False, stream: TextIO = sys.stderr) -> None:
        self.arches, self.live, self.quiet, self.stream = arches, live, quiet, stream
        self.state = dict.fromkeys(arches, "waiting")
        self.started = time.monotonic()
        self.since = dict.fromkeys(arches, self.started)
        self._lock = threading.Lock()
        self._drawn = False

    @classmethod
    def for_stream(cls, arches: list[str], quiet: bool, stream: TextIO = sys.stderr) -> Progress:
        return cls(arches, live=stream.isatty() and not quiet, quiet=quiet, stream=stream)

    def update(self, arch: str, state: str) -> None:
        with self._lock:
            if self.state[arch].split()[0] != state.split()[0]:
                self.since[arch] = time.monotonic()
            self.state[arch] = state
            if self.live:
                self._draw()
            elif not self.quiet:
                print(f"lab: {arch}: {state} ({time.monotonic() - self.started:.1f}s)", file=self.stream, flush=True)

    def _draw(self) -> None:
        if self._drawn:
            self.stream.write(f"\x1b[{len(self.arches)}F")
        now = time.monotonic()
        for arch in self.arches:
            self.stream.write(f"\x1b[2K  {arch:<8} {self.state[arch]:<28} {now - self.since[arch]:6.1f}s\n")
        self.stream.flush()
        self._drawn = True
