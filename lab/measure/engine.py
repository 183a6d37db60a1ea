"""The one measuring engine: probe runs in a booted guest, batched, each under its own deadline.

:func:`install` uploads the built variants; :func:`measure` runs every
(variant, size) ``repeat`` times, interleaved (every variant once per round, so
drift hits all variants alike), one SSH round trip per round (see
:mod:`lab.measure.batch`), and judges every run: a non-zero exit or a deadline
kill is a ``payload`` failure, unparsable output a ``parse`` failure; a cell's
first failure ends its measurement, the other cells go on. Nothing is retried.
Results stream back run by run: a guest that stops answering is detected one
run deadline (plus a grace) after its last finished run, and every run that
finished before is kept.

The probe runs in its default re-exec mode, so its entry counts start at its
own execve and do not depend on the SSH server's shell.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from lab.deadline import check
from lab.errors import GuestError
from lab.guests.protocol import TEST_FILE_PATH, THP_CONTROL
from lab.guests.ssh import Guest, Streamed
from lab.measure import batch
from lab.payloads.build import Payload
from lab.payloads.probe import ProbeOutputError, ProbeResult
from lab.payloads.probe import parse as parse_probe

REMOTE_DIR = "/tmp/lab-payloads"
BATCH_SCRIPT = f"{REMOTE_DIR}/round.sh"
PROBE_CHILD_ENV = "LAB_PROBE_CHILD"  # names the re-executing parent's PID (payloads/fault_probe.c)


def stall_seconds(per_run_seconds: int) -> int:
    """Silence beyond a run's own deadline (enforced in the guest) plus this grace means the guest is frozen."""
    return per_run_seconds + max(10, per_run_seconds // 4)


CellKey = tuple[str, int, int]  # (variant name, buffer size, index of the run-axes point)


def probe_command(
    remote: str,
    size: int,
    file: str | None = TEST_FILE_PATH,
    order: str = "random",
    reexec: bool = True,
    file_bytes: int = 0,
    warm: bool = False,
) -> str:
    """The guest shell command for one probe run. Pure."""
    argv = [remote, "--size", str(size)]
    if file:
        argv += ["--file", file, "--order", order]
        if file_bytes:
            argv += ["--file-bytes", str(file_bytes)]
        if warm:
            argv.append("--warm")
    if not reexec:
        argv.append("--no-reexec")
    return shlex.join(argv)


def point_command(remote: str, size: int, file_bytes: int, point: Mapping[str, str], set_thp: bool, tracer: str | None = None) -> str:
    """One probe run at a point of the run axes (lab.axes): THP set in the guest first when the run varies it,
    the page-cache state and read order as probe flags, glibc tunables in the environment. With ``tracer``
    (fault-trace's path in the guest), the probe runs under it, launched by the tracer instead of re-executing
    itself (the tracer plays the re-executing parent: the probe runs as in lab run), so its counters include the
    tracer's fork, which the trace reports apart. Pure."""
    probe = probe_command(remote, size, order=point.get("order", "random"), file_bytes=file_bytes, warm=point.get("cache") == "warm")
    env = f"GLIBC_TUNABLES={shlex.quote(point['tunables'])} " if point.get("tunables") else ""
    thp = f"echo {shlex.quote(point['thp'])} > {THP_CONTROL} && " if set_thp else ""
    launcher = f"{shlex.quote(tracer)} --env-ppid {PROBE_CHILD_ENV} -- " if tracer else ""
    return f"{thp}{env}exec {launcher}{probe}"


def run_batch(guest: Guest, jobs: list[batch.Job], per_run_seconds: int) -> tuple[Streamed, list[batch.Outcome]]:
    """One round trip: the jobs' script shipped as a file (its size is unbounded; a command string is not), then
    run and streamed back (see :mod:`lab.measure.batch`). A guest that cannot take the file counts as stalled."""
    try:
        guest.put_bytes(batch.script(jobs, per_run_seconds).encode(), BATCH_SCRIPT)
    except GuestError as exc:
        done = Streamed("", "", None, exc.message)
    else:
        done = guest.stream(f"sh {BATCH_SCRIPT}", stall_seconds(per_run_seconds), f"{batch.MARK}-END")
    return done, batch.parse(done.stdout, jobs)


def install(guest: Guest, payloads: list[Payload]) -> dict[str, str]:
    """Upload each payload (SFTP); returns variant name → path in the guest."""
    guest.run(f"mkdir -p {REMOTE_DIR}")
    paths = {}
    for p in payloads:
        remote = f"{REMOTE_DIR}/{p.variant.name}"
        guest.put(p.binary, remote)
        paths[p.variant.name] = remote
    return paths


@dataclass(frozen=True)
class Failure:
    stage: str  # payload | parse
    message: str
    evidence: str


@dataclass
class CellRuns:
    """One cell's parsed runs in repeat order, or the failure that ended it."""

    results: list[ProbeResult] = field(default_factory=list)
    failure: Failure | None = None


@dataclass(frozen=True)
class RawRun:
    """One run's output as the guest printed it (kept as evidence by the caller)."""

    variant: str
    size: int
    repeat: int
    outcome: batch.Outcome
    point: int = 0  # index of the run-axes point


def _judge(name: str, job: batch.Job, out: batch.Outcome, size: int, file_bytes: int) -> ProbeResult | Failure:
    if out.status != 0:
        why = out.why()
        if out.oom_kills:
            why += " (raise guest.memory_mib, or measure a smaller --size)"
        evidence = f"command: {job.command}\nstderr: {out.stderr[-2000:]}\nstdout: {out.stdout[:2000]}"
        return Failure("payload", f"{name}: probe failed ({why})", evidence)
    try:
        result = parse_probe(out.stdout)
    except ProbeOutputError as exc:
        return Failure("parse", f"{name}: {exc.message}", out.stdout[:4000])
    # The probe measured what was asked, or its numbers belong to another cell.
    if result.facts.buffer_size != size:
        return Failure("parse", f"{name}: the probe measured a {result.facts.buffer_size}-byte buffer, not {size}", out.stdout[:4000])
    want_pages = file_bytes // result.facts.page_size if file_bytes else None
    if want_pages is not None and result.file is not None and result.file.pages > want_pages:
        return Failure("parse", f"{name}: the probe read {result.file.pages} file pages, more than {want_pages}", out.stdout[:4000])
    return result


def measure(
    guest: Guest,
    remotes: dict[str, str],
    sizes: tuple[int, ...],
    repeat: int,
    per_run_seconds: int,
    file_bytes: int = 0,
    on_round: Callable[[int], None] = lambda r: None,
    on_raw: Callable[[RawRun], None] = lambda raw: None,
    points: Sequence[Mapping[str, str]] = ({},),
    set_thp: bool = False,
) -> dict[CellKey, CellRuns]:
    """Every variant in ``remotes`` × ``sizes`` × run-axes ``points``, ``repeat`` times; see the module docstring."""
    cells = {(name, size, pi): CellRuns() for pi in range(len(points)) for size in sizes for name in remotes}
    for r in range(repeat):
        on_round(r)
        jobs = [
            batch.Job(f"{name}:{size}:{pi}:{r}", point_command(remotes[name], size, file_bytes, point, set_thp))
            for pi, point in enumerate(points)
            for size in sizes
            for name in remotes
            if cells[(name, size, pi)].failure is None
        ]
        if not jobs:
            break
        check()  # an interrupted run starts no new round
        done, outcomes = run_batch(guest, jobs, per_run_seconds)
        for job, out in zip(jobs, outcomes, strict=True):
            name, size_text, pi, _ = job.key.split(":")
            cell = cells[(name, int(size_text), int(pi))]
            if out.status == -1 and done.stalled:
                cell.failure = Failure(
                    "payload", f"{guest.name} {name}: guest stopped answering: {done.stalled}", f"command: {job.command}"
                )
                continue
            on_raw(RawRun(name, int(size_text), r, out, int(pi)))
            judged = _judge(f"{guest.name} {name}", job, out, int(size_text), file_bytes)
            if isinstance(judged, Failure):
                cell.failure = judged
            else:
                cell.results.append(judged)
        if done.stalled:  # the guest is gone: what finished is kept, nothing more is tried
            for (name, _, _), cell in cells.items():
                if cell.failure is None:
                    why = f"guest stopped answering after {len(cell.results)} of {repeat} runs: {done.stalled}"
                    cell.failure = Failure("payload", f"{guest.name} {name}: {why}", "")
            break
    return cells
