"""Running the fault probe in a booted guest: install the variants, run them, parse every run.

The probe runs with the default re-exec mode, so its entry counts start at its
own execve and do not depend on the SSH server's shell.
"""

from __future__ import annotations

import shlex
import statistics
from dataclasses import dataclass

from lab import util
from lab.errors import InfraError, UserError
from lab.guest import Guest
from lab.images import SCRATCH_MOUNT, TEST_FILE
from lab.payloads import Payload
from lab.probe import ProbeResult, parse

REMOTE_DIR = "/tmp/lab-payloads"
TEST_FILE_PATH = f"{SCRATCH_MOUNT}/{TEST_FILE}"


class PayloadRunError(InfraError):
    """The probe exited non-zero or was killed in the guest."""


@dataclass(frozen=True)
class Run:
    variant: str
    repeat: int
    result: ProbeResult
    raw: str


def parse_size(text: str) -> int:
    """A size from the command line, as a user error when malformed."""
    try:
        return util.parse_size(text)
    except ValueError as exc:
        raise UserError(str(exc), "e.g. --size 1M,8M") from None


def probe_command(
    remote: str, size: int, file: str | None = TEST_FILE_PATH, order: str = "random", reexec: bool = True, file_bytes: int = 0
) -> str:
    """The guest shell command for one probe run. Pure."""
    argv = [remote, "--size", str(size)]
    if file:
        argv += ["--file", file, "--order", order]
        if file_bytes:
            argv += ["--file-bytes", str(file_bytes)]
    if not reexec:
        argv.append("--no-reexec")
    return shlex.join(argv)


def install(guest: Guest, payloads: list[Payload]) -> dict[str, str]:
    """Upload each payload (SFTP); returns variant name → path in the guest."""
    guest.run(f"mkdir -p {REMOTE_DIR}")
    paths = {}
    for p in payloads:
        remote = f"{REMOTE_DIR}/{p.variant.name}"
        guest.put(p.binary, remote)
        paths[p.variant.name] = remote
    return paths


def run_once(
    guest: Guest, remote: str, size: int, file: str | None = TEST_FILE_PATH, order: str = "random", reexec: bool = True, file_bytes: int = 0
) -> tuple[ProbeResult, str]:
    command = probe_command(remote, size, file, order, reexec, file_bytes)
    result = guest.run(command)
    if result.exited != 0:
        raise PayloadRunError(
            f"{guest.name}: {command} exited with status {result.exited}: {result.stderr.strip()[:300]}",
            "the payload crashed or could not start in the guest (missing loader?)",
            details=f"stdout: {result.stdout[:2000]}\nstderr: {result.stderr[:2000]}",
        )
    return parse(result.stdout), result.stdout


def run_matrix(guest: Guest, remotes: dict[str, str], size: int, repeat: int) -> list[Run]:
    """Every variant ``repeat`` times, interleaved (v1 v2 … v1 v2 …), so drift hits all variants alike."""
    runs = []
    for i in range(repeat):
        for variant, remote in remotes.items():
            result, raw = run_once(guest, remote, size)
            runs.append(Run(variant, i, result, raw))
    return runs


def summarize(runs: list[Run]) -> dict[str, dict[str, tuple[float, float, int, int]]]:
    """variant → stage → (median delta minflt, median delta majflt, min minflt, max minflt)."""
    out: dict[str, dict[str, tuple[float, float, int, int]]] = {}
    for variant in dict.fromkeys(r.variant for r in runs):
        mine = [r.result for r in runs if r.variant == variant]
        out[variant] = {}
        for stage in (s.name for s in mine[0].stages):
            mins = [res.stage(stage).delta_minflt for res in mine]
            majs = [res.stage(stage).delta_majflt for res in mine]
            out[variant][stage] = (statistics.median(mins), statistics.median(majs), min(mins), max(mins))
    return out
