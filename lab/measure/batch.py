"""Many probe runs in one SSH round trip: the job file for the guest's runner, and the parser of what it streams back.

The guest side is ``payloads/runner.c`` (lab-runner, static, built per arch):
each run starts in a session (and process group) of its own, one timer in the
runner SIGKILLs the whole group at the run's deadline (a hanging probe costs
one run, not the batch, and a hung re-executed probe child dies with its
parent), and each run's stdout, stderr and exit status come back framed with
their byte lengths, as soon as the run ends. A frame is taken whole or not at
all: after a frame that does not parse, nothing more is believed. Pure: builds
bytes, parses bytes.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

MARK = "@@LAB"
RUN, END = f"{MARK}-RUN ", f"{MARK}-END "  # a frame's first line and its trailer (the stall detector counts trailers)
MAGIC = b"LAB-JOBS 1\n"
PATH = "/usr/sbin:/usr/bin"  # every job's PATH (a job sees only the environment it is given)
SHELL = "/bin/sh"


@dataclass(frozen=True)
class Job:
    key: str  # opaque to the guest: identifies the run on the way back (no white space)
    argv: tuple[str, ...]  # argv[0] is an absolute path (the runner execs it; no PATH search)
    env: tuple[tuple[str, str], ...] = ()  # the job's whole environment besides PATH
    writes: tuple[tuple[str, str], ...] = ()  # (path, text) written in the job's process before the exec (e.g. THP)

    @classmethod
    def shell(cls, key: str, command: str) -> Job:
        """A job that is a shell command (tests, and the loader statistics' redirections)."""
        return cls(key, (SHELL, "-c", command))

    def describe(self) -> str:
        """The job as one shell-like line, for evidence: the writes, the environment, the argv."""
        writes = "".join(f"echo {shlex.quote(text)} > {path} && " for path, text in self.writes)
        env = "".join(f"{name}={shlex.quote(value)} " for name, value in self.env)
        return writes + env + shlex.join(self.argv)


@dataclass(frozen=True)
class Outcome:
    key: str
    status: int  # exit status (128 + N: killed by signal N); -1 = no result came back
    stdout: str
    stderr: str
    deadline: bool = False  # the runner's per-run timer killed it
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


def _record(tag: str, text: str) -> bytes:
    data = text.encode()
    if b"\0" in data:
        raise ValueError(f"a job field holds a NUL byte: {text!r}")
    return f"{tag} {len(data)}\n".encode() + data + b"\n"


def job_file(jobs: list[Job]) -> bytes:
    """The runner's input (see payloads/runner.c): shipped to the guest as a file, never inside a command string
    (its size grows with the jobs). Raises ValueError for a job the runner would refuse."""
    out = [MAGIC]
    for job in jobs:
        if not job.key or any(c.isspace() for c in job.key) or len(job.key) > 200:
            raise ValueError(f"job key {job.key!r} is empty, too long or contains white space")
        if not job.argv or not job.argv[0].startswith("/"):
            raise ValueError(f"job {job.key}: argv[0] must be an absolute path: {job.argv!r}")
        if any(not name or "=" in name for name, _ in job.env):
            raise ValueError(f"job {job.key}: bad environment name in {job.env!r}")
        out.append(_record("K", job.key))
        out += [_record("A", a) for a in job.argv]
        out += [_record("E", f"{name}={value}") for name, value in (("PATH", PATH), *job.env)]
        for path, text in job.writes:
            out += [_record("W", path), _record("V", text)]
        out.append(_record("R", ""))
    return b"".join(out)


def _frame(raw: bytes, pos: int) -> tuple[Outcome, int] | str:
    """The frame at ``pos`` and where the next one starts, or why it is not one."""
    nl = raw.find(b"\n", pos)
    if not raw.startswith(RUN.encode(), pos) or nl < 0:
        return "no frame header"
    fields = raw[pos + len(RUN) : nl].split(b" ")
    if len(fields) != 6 or not all(f.lstrip(b"-").isdigit() for f in fields[1:]):
        return f"bad frame header {raw[pos:nl][:120]!r}"
    key = fields[0].decode(errors="replace")
    status, deadline, oom, out_len, err_len = (int(f) for f in fields[1:])
    body = nl + 1
    trailer = f"\n{END}{key}\n".encode()
    end = body + out_len + err_len
    if out_len < 0 or err_len < 0 or raw[end : end + len(trailer)] != trailer:
        return f"frame of {key} is cut short or its lengths are wrong"
    stdout = raw[body : body + out_len].decode(errors="replace").strip("\n")
    stderr = raw[body + out_len : end].decode(errors="replace").strip("\n")
    return Outcome(key, status, stdout, stderr, deadline=deadline == 1, oom_kills=max(0, oom)), end + len(trailer)


def parse(raw: bytes, jobs: list[Job]) -> list[Outcome]:
    """Outcomes in job order. Frames are read in order while each parses whole; from the first that does not (a
    garbled or cut frame, an unknown or repeated key), nothing more is believed, and every job without a frame
    gets status -1 saying why."""
    wanted = {j.key for j in jobs}
    found: dict[str, Outcome] = {}
    pos, why = 0, "the batch ended before this run"
    while pos < len(raw):
        frame = _frame(raw, pos)
        if isinstance(frame, str) or frame[0].key not in wanted or frame[0].key in found:
            problem = frame if isinstance(frame, str) else f"unexpected frame for {frame[0].key!r}"
            why = f"the runner's output is garbled at byte {pos} ({problem}): nothing from there on is taken"
            break
        found[frame[0].key], pos = frame
    return [found.get(j.key, Outcome(j.key, -1, "", f"no result: {why}")) for j in jobs]
