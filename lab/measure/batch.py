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
    status: int  # exit status (128 + N: killed by signal N); -1 = no result came back
    stdout: str
    stderr: str
    deadline: bool = False  # the per-run watchdog fired (it leaves a mark before it kills)
    oom_kills: int = 0  # processes the guest's OOM killer killed during this run (/proc/vmstat oom_kill)

    def why(self) -> str:
        """What ended a failed run, in words: the deadline, the OOM killer, or the plain exit status."""
        if self.deadline:
            return "killed by the per-run deadline"
        if self.oom_kills:
            return f"exit status {self.status}: the guest's OOM killer killed {self.oom_kills} process(es) during the run"
        if self.status > 128:
            return f"exit status {self.status}: killed by signal {self.status - 128}, not by lab's deadline"
        return f"exit status {self.status}"


def script(jobs: list[Job], per_run_seconds: int, workdir: str = "/tmp/lab-batch") -> str:
    """A POSIX sh script running ``jobs`` in order, each under a deadline, reporting between markers.

    It is shipped to the guest as a file (never as a command string: its length grows with the jobs). The
    watchdog marks a run before killing it, and a failed run reports how many processes the OOM killer killed
    meanwhile, so a SIGKILL is attributed to the deadline or the OOM killer, never guessed from 137."""
    oom = "awk '$1 == \"oom_kill\" {print $2}' /proc/vmstat 2>/dev/null || echo 0"
    lines = [f"rm -rf {workdir}", f"mkdir -p {workdir}", f"o=$({oom})"]  # no mark or output of an earlier round
    for i, job in enumerate(jobs):
        if any(c.isspace() for c in job.key):
            raise ValueError(f"job key {job.key!r} contains white space")
        out, err, mark = f"{workdir}/{i}.out", f"{workdir}/{i}.err", f"{workdir}/{i}.deadline"
        lines += [
            f"setsid sh -c {shlex.quote(job.command)} >{out} 2>{err} </dev/null & p=$!",
            f'setsid sh -c "sleep {per_run_seconds}; : >{mark}; kill -KILL -$p" >/dev/null 2>&1 </dev/null & w=$!',
            "wait $p; rc=$?; kill -KILL -$w 2>/dev/null; d=0; k=0",
            f"[ -e {mark} ] && d=1",
            f"n=$({oom}); [ $rc -ne 0 ] && k=$((n - o)); o=$n",  # this run's OOM kills only
            f"echo '{MARK}-BEGIN {job.key}'; cat {out}; echo; echo '{MARK}-STDERR'; cat {err}; echo; echo \"{MARK}-END $rc $d $k\"",
        ]
    return "\n".join(lines) + "\n"


def _ints(text: str) -> list[int] | None:
    fields = text.split()
    if len(fields) != 3 or not all(f.lstrip("-").isdigit() for f in fields):
        return None
    return [int(f) for f in fields]


def parse(text: str, jobs: list[Job]) -> list[Outcome]:
    """Outcomes in job order; a job whose block is missing or garbled (the batch died) gets status -1."""
    found: dict[str, Outcome] = {}
    key: str | None = None
    part, out, err = "", [], []
    for line in text.splitlines():
        if line.startswith(f"{MARK}-BEGIN "):
            key, part, out, err = line.split(" ", 1)[1], "out", list[str](), list[str]()
        elif line == f"{MARK}-STDERR" and key is not None:
            part = "err"
        elif line.startswith(f"{MARK}-END ") and key is not None:
            fields = _ints(line.split(" ", 1)[1])
            stdout, stderr = "\n".join(out).strip("\n"), "\n".join(err).strip("\n")
            if fields is None:
                found[key] = Outcome(key, -1, stdout, stderr or "garbled end marker: " + line)
            else:
                found[key] = Outcome(key, fields[0], stdout, stderr, deadline=fields[1] == 1, oom_kills=max(0, fields[2]))
            key = None
        elif key is not None:
            (out if part == "out" else err).append(line)
    return [found.get(j.key, Outcome(j.key, -1, "", "no result: the batch ended before this run")) for j in jobs]
