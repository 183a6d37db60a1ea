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
from dataclasses import dataclass, field, replace
from pathlib import Path

from lab.deadline import check
from lab.errors import GuestError
from lab.guests.protocol import TEST_FILE_PATH, THP_CONTROL
from lab.guests.ssh import Guest, Streamed
from lab.measure import batch
from lab.payloads.build import Payload
from lab.payloads.probe import ProbeOutputError, ProbeResult
from lab.payloads.probe import parse as parse_probe

REMOTE_DIR = "/tmp/lab-payloads"
RUNNER_REMOTE = f"{REMOTE_DIR}/lab-runner"  # payloads/runner.c, uploaded with the payloads
PROBE_CHILD_ENV = "LAB_PROBE_CHILD"  # names the re-executing parent's PID (payloads/fault_probe.c)
RUNNER_REMEDY = "rebuild it with `lab payloads build --arch ARCH` (lab-runner is built per arch like the probe)"


def stall_seconds(per_run_seconds: int) -> int:
    """Silence beyond a run's own deadline (enforced in the guest) plus this grace means the guest is frozen."""
    return per_run_seconds + max(10, per_run_seconds // 4)


CellKey = tuple[str, int, int]  # (variant name, buffer size, index of the run-axes point)


def probe_argv(
    remote: str,
    size: int,
    file: str | None = TEST_FILE_PATH,
    order: str = "random",
    reexec: bool = True,
    file_bytes: int = 0,
    warm: bool = False,
) -> tuple[str, ...]:
    """The argv of one probe run. Pure."""
    argv = [remote, "--size", str(size)]
    if file:
        argv += ["--file", file, "--order", order]
        if file_bytes:
            argv += ["--file-bytes", str(file_bytes)]
        if warm:
            argv.append("--warm")
    if not reexec:
        argv.append("--no-reexec")
    return tuple(argv)


def probe_command(remote: str, size: int, file: str | None = TEST_FILE_PATH, reexec: bool = True) -> str:
    """:func:`probe_argv` as one shell command (for a guest shell: ``lab exec``, tests). Pure."""
    return shlex.join(probe_argv(remote, size, file, reexec=reexec))


def point_job(
    key: str, remote: str, size: int, file_bytes: int, point: Mapping[str, str], set_thp: bool, tracer: str | None = None
) -> batch.Job:
    """One probe run at a point of the run axes (lab.axes): THP written in the run's process first when the run
    varies it, the page-cache state and read order as probe flags, glibc tunables in the environment. With
    ``tracer`` (fault-trace's path in the guest), the probe runs under it, launched by the tracer instead of
    re-executing itself (the tracer plays the re-executing parent: the probe runs as in lab run), so its counters
    include the tracer's fork, which the trace reports apart. Pure."""
    probe = probe_argv(remote, size, order=point.get("order", "random"), file_bytes=file_bytes, warm=point.get("cache") == "warm")
    env = (("GLIBC_TUNABLES", point["tunables"]),) if point.get("tunables") else ()
    writes = ((THP_CONTROL, point["thp"]),) if set_thp else ()
    launcher = (tracer, "--env-ppid", PROBE_CHILD_ENV, "--") if tracer else ()
    return batch.Job(key, (*launcher, *probe), env, writes)


def runner_failed(done: Streamed) -> str | None:
    """Why the guest's runner did not do its job (it is missing, for another arch, or refused the job file)."""
    if done.stalled or done.exited is None or done.exited <= 0:  # below 0: no status came back (a lost guest)
        return None
    said = (done.stderr.strip() or done.stdout.strip()).splitlines()
    return f"the guest runner {RUNNER_REMOTE} failed (exit status {done.exited}: {said[-1][:200] if said else 'no output'})"


def run_batch(guest: Guest, jobs: list[batch.Job], per_run_seconds: int) -> tuple[Streamed, list[batch.Outcome]]:
    """One round trip: the guest's runner reads the jobs' file on its stdin (its size is unbounded; a command
    string's is not) and streams each run back as it ends (see :mod:`lab.measure.batch`)."""
    command = f"{RUNNER_REMOTE} - {per_run_seconds}"
    done = guest.stream(command, stall_seconds(per_run_seconds), batch.END, batch.job_file(jobs))
    outcomes = batch.parse(done.raw, jobs)
    failed = runner_failed(done)
    if failed:
        outcomes = [o if o.status != -1 else replace(o, stderr=f"{failed}; {RUNNER_REMEDY}") for o in outcomes]
    return done, outcomes


def remotes(payloads: list[Payload]) -> dict[str, str]:
    """Variant name → the payload's path in the guest."""
    return {p.variant.name: f"{REMOTE_DIR}/{p.variant.name}" for p in payloads}


def files(payloads: list[Payload], runner: Path | None) -> list[tuple[str, bytes, int]]:
    """What a guest needs to measure: the runner (rounds need it: :func:`run_batch`) and the payloads, as
    (path in the guest, bytes, mode) for :meth:`Guest.put_files` (or lab.guests.boot's ``uploads``)."""
    paths = remotes(payloads)
    out = [(paths[p.variant.name], p.binary.read_bytes(), 0o755) for p in payloads]
    return out + ([(RUNNER_REMOTE, runner.read_bytes(), 0o755)] if runner is not None else [])


def install(guest: Guest, payloads: list[Payload], runner: Path | None) -> dict[str, str]:
    """Upload :func:`files` into a booted guest in one round trip; returns variant name → path in the guest."""
    done = guest.put_files(files(payloads, runner))
    if done.exited != 0:
        raise GuestError(
            f"{guest.name}: installing the payloads failed: {(done.stderr or done.stdout).strip()[-300:]}", "check free space in the guest"
        )
    return remotes(payloads)


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


def _judge(
    name: str, job: batch.Job, out: batch.Outcome, size: int, file_bytes: int, cold: bool, guest: tuple[int, int] = (0, 0)
) -> ProbeResult | Failure:
    """A probe run's result, or why it is not one. ``guest``: the page size and word size the guest's spec promises
    (its kernel flavour, its arch row; 0: unchecked)."""
    if out.status != 0:
        why = out.why()
        if out.oom_kills:
            why += " (raise guest.memory_mib, or measure a smaller --size)"
        evidence = f"command: {job.describe()}\nstderr: {out.stderr[-2000:]}\nstdout: {out.stdout[:2000]}"
        return Failure("payload", f"{name}: probe failed ({why})", evidence)
    try:
        result = parse_probe(out.stdout)
    except ProbeOutputError as exc:
        return Failure("parse", f"{name}: {exc.message}", out.stdout[:4000])
    # The probe measured what was asked, or its numbers belong to another cell.
    if result.facts.buffer_size != size:
        return Failure("parse", f"{name}: the probe measured a {result.facts.buffer_size}-byte buffer, not {size}", out.stdout[:4000])
    page, bits = guest
    if page and result.facts.page_size != page:
        return Failure(
            "parse", f"{name}: the guest has {result.facts.page_size}-byte pages, not its kernel flavour's {page}", out.stdout[:4000]
        )
    if bits and result.facts.word_bits not in (None, bits):
        return Failure("parse", f"{name}: the probe is {result.facts.word_bits}-bit, not the arch's {bits}-bit", out.stdout[:4000])
    want_pages = file_bytes // result.facts.page_size if file_bytes else None
    if want_pages is not None and result.file is not None and result.file.pages > want_pages:
        return Failure("parse", f"{name}: the probe read {result.file.pages} file pages, more than {want_pages}", out.stdout[:4000])
    # A cold run that found part of the test file cached would count fewer major faults: an error, not a sample.
    if cold and result.file is not None and result.file.resident_before:
        why = f"{result.file.resident_before} of the test file's {result.file.pages} pages were still cached after the eviction"
        return Failure("payload", f"{name}: a cold run started warm: {why}", out.stdout[:4000])
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
    guest_shape: tuple[int, int] = (0, 0),
) -> dict[CellKey, CellRuns]:
    """Every variant in ``remotes`` × ``sizes`` × run-axes ``points``, ``repeat`` times; see the module docstring."""
    cells = {(name, size, pi): CellRuns() for pi in range(len(points)) for size in sizes for name in remotes}
    for r in range(repeat):
        on_round(r)
        jobs = [
            point_job(f"{name}:{size}:{pi}:{r}", remotes[name], size, file_bytes, point, set_thp)
            for pi, point in enumerate(points)
            for size in sizes
            for name in remotes
            if cells[(name, size, pi)].failure is None
        ]
        if not jobs:
            break
        check()  # an interrupted run starts no new round
        done, outcomes = run_batch(guest, jobs, per_run_seconds)
        failed = runner_failed(done)
        for job, out in zip(jobs, outcomes, strict=True):
            name, size_text, pi, _ = job.key.split(":")
            cell = cells[(name, int(size_text), int(pi))]
            if out.status == -1 and done.stalled:
                cell.failure = Failure(
                    "payload", f"{guest.name} {name}: guest stopped answering: {done.stalled}", f"command: {job.describe()}"
                )
                continue
            if out.status == -1 and failed:
                cell.failure = Failure(
                    "payload", f"{guest.name} {name}: {failed}; {RUNNER_REMEDY.replace('ARCH', guest.name)}", done.stderr[-2000:]
                )
                continue
            on_raw(RawRun(name, int(size_text), r, out, int(pi)))
            cold = points[int(pi)].get("cache") != "warm"
            judged = _judge(f"{guest.name} {name}", job, out, int(size_text), file_bytes, cold, guest_shape)
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
