"""Many probe runs in one SSH round trip: a guest-side script with per-run deadlines, and its parser.

Each run starts in a session (and process group) of its own, with a watchdog
that SIGKILLs the whole group at the run's deadline: a hanging probe costs one
run, not the batch, and a hung re-executed probe child dies with its parent
(``timeout`` would kill one process only). Each run's stdout, stderr and exit
status come back between markers, as soon as the run ends, and are judged
separately. Pure: builds text, parses text.
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
    status: int  # exit status; 137 = killed by the per-run deadline (SIGKILL); -1 = no result came back
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
            f"setsid sh -c {shlex.quote(job.command)} >{out} 2>{err} </dev/null & p=$!",
            f'setsid sh -c "sleep {per_run_seconds}; kill -KILL -$p" >/dev/null 2>&1 </dev/null & w=$!',
            "wait $p; rc=$?; kill -KILL -$w 2>/dev/null",
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
