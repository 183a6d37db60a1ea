"""The two error roots of lab.

Every failure a user can see is either a :class:`UserError` (bad input: a
config key, an unknown arch, a missing file — the user can fix it) or an
:class:`InfraError` (the host, QEMU, the network or a guest misbehaved — retry
or repair the machine). Each carries a one-line message and a remedy; only the
CLI maps them to exit codes.
"""

from __future__ import annotations

from pathlib import Path


class LabError(Exception):
    """Base of all lab errors: ``message`` says what went wrong, ``remedy`` what to do."""

    exit_code = 1

    def __init__(self, message: str, remedy: str = "", *, logs: tuple[Path, ...] = (), details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy
        self.logs = logs  # log files worth reading; the CLI prints their paths
        self.details = details  # multi-line evidence (command, exit status, console tail) for --verbose and reports

    def __str__(self) -> str:
        text = self.message
        if self.remedy:
            text += f" ({self.remedy})"
        return text


class UserError(LabError):
    """Bad input: config, arguments, recipes. Fix the input and run again."""

    exit_code = 3


class InfraError(LabError):
    """The machine, QEMU, apt or a guest failed. Usually worth a retry or a `lab doctor`."""

    exit_code = 4


class BootError(InfraError):
    """A guest did not come up: QEMU died, or the ready marker did not appear in time."""


class GuestError(InfraError):
    """SSH to a running guest failed, or a command in it could not be run."""


class CacheError(InfraError):
    """A cache entry's record is unreadable or its files do not match their recorded digests (it is rebuilt)."""


class ImageError(InfraError):
    """An image could not be resolved, downloaded or assembled."""
