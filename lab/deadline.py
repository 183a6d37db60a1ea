"""Deadlines: one absolute end time passed down, instead of sleeps added up; and the one cancellation flag.

Every wait in lab (QEMU's ready marker, QMP, SSH readiness, snapshot saves, cache locks) pauses through
:meth:`Deadline.pause`, which wakes at once when :func:`cancel` is called (the runner calls it on Ctrl-C or
SIGTERM, from the main thread) and raises :class:`Cancelled`: an interrupt reaches every wait within one
poll interval, and a cancelled wait is never mistaken for a timeout (nothing is blamed or discarded for it).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

_cancelled = threading.Event()


class Cancelled(Exception):
    """The run was interrupted while this thread waited: unwind, blame nothing, discard nothing."""

    def __init__(self) -> None:
        super().__init__("interrupted")


def cancel() -> None:
    """Wake every waiting thread with :class:`Cancelled` (until :func:`reset`)."""
    _cancelled.set()


def reset() -> None:
    """Clear the flag (a new run in the same process, or a test)."""
    _cancelled.clear()


def cancelled() -> bool:
    return _cancelled.is_set()


def check() -> None:
    """Raise :class:`Cancelled` if :func:`cancel` was called."""
    if _cancelled.is_set():
        raise Cancelled()


@dataclass(frozen=True)
class Deadline:
    """An absolute point on the monotonic clock, ``seconds`` after creation."""

    seconds: float
    start: float = field(default_factory=time.monotonic)

    @property
    def end(self) -> float:
        return self.start + self.seconds

    @property
    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def pause(self, seconds: float) -> None:
        """Sleep ``seconds`` (at most until the deadline); raise :class:`Cancelled` at once if the run is cancelled."""
        if _cancelled.wait(min(seconds, self.remaining)):
            raise Cancelled()
