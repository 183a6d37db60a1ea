"""Many probe runs in one SSH round trip: a guest-side script with per-run deadlines, and its parser.

Each run is wrapped by busybox ``timeout -s KILL`` so a hanging probe costs one
run, not the batch; each run's stdout, stderr and exit status come back
between markers and are judged separately. Pure: builds text, parses text.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

MARK = "@@LAB"


@dataclass(frozen=True)
class Job:
    key: str  # opaque to the guest: identifies the run on the way back (no spaces)
    command: str  # a complete, already-quoted guest command


@dataclass(frozen=True)
class Outcome:
    key: str
    status: int  # exit status; 137 = killed by the per-run deadline (SIGKILL)
    stdout: str
    stderr: str


def script(jobs: list[Job], per_run_seconds: int, workdir: str = "/tmp/lab-batch") -> str:
    """A POSIX sh script running ``jobs`` in order, each under a deadline, reporting between markers."""
    lines = [f"mkdir -p {workdir}"]
    for i, job in enumerate(jobs):
        if any(c.isspace() for c in job.key):
            raise ValueError(f"job key {job.key!r} contains white space")
        out, err = f"{workdir}/{i}.out", f"{workdir}/{i}.err"
        lines += [
            f"timeout -s KILL {per_run_seconds} sh -c {shlex.quote(job.command)} >{out} 2>{err}; rc=$?",
            f"echo '{MARK}-BEGIN {job.key}'; cat {out}; echo; echo '{MARK}-STDERR'; cat {err}; echo; echo \"{MARK}-END $rc\"",
        ]
    return "\n".join(lines) + "\n"


def parse(text: str, jobs: list[Job]) -> list[Outcome]:
    """Outcomes in job order; a job whose block is missing (the batch died) gets status -1."""
    found: dict[str, Outcome] = {}
    key: str | None = None
    part, out, err = "", [], []
    for line in text.splitlines():
        if line.startswith(f"{MARK}-BEGIN "):
            key, part, out, err = line.split(" ", 1)[1], "out", list[str](), list[str]()
        elif line == f"{MARK}-STDERR" and key is not None:
            part = "err"
        elif line.startswith(f"{MARK}-END ") and key is not None:
            status = line.split(" ", 1)[1]
            found[key] = Outcome(
                key, int(status) if status.lstrip("-").isdigit() else -1, "\n".join(out).strip("\n"), "\n".join(err).strip("\n")
            )
            key = None
        elif key is not None:
            (out if part == "out" else err).append(line)
    return [found.get(j.key, Outcome(j.key, -1, "", "no result: the batch ended before this run")) for j in jobs]
