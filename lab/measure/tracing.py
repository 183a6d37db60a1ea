"""Traced runs: fault-trace around the probe (or any program) in a booted guest, attributed on the host.

A traced run never enters a cell's samples or a baseline: ``lab run --explain``
writes each cell's account to ``<run dir>/explain/<arch>/<cell>.json``, apart
from the store. Every probe cell is traced once, after its counted runs, in one
SSH round trip per guest (:mod:`lab.measure.batch`); the account is checked
against the probe's own numbers and the untraced runs' medians
(:mod:`lab.explain.checks`). glibc's dynamic loader also reports its own
statistics (``LD_DEBUG=statistics``), kept as a note beside the table.
"""

from __future__ import annotations

import json
import logging
import shlex
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lab.arches import Arch
from lab.config import Config
from lab.errors import InfraError, LabError
from lab.explain import account as account_mod
from lab.explain import checks as checks_mod
from lab.explain import render
from lab.explain import trace as trace_mod
from lab.explain.sources import GuestFiles, debug_symbols
from lab.guests.images import Image, ImageStore
from lab.guests.ssh import Guest
from lab.measure import batch, engine
from lab.payloads.build import TRACER, Payload, PayloadStore
from lab.payloads.probe import ProbeOutputError, ProbeResult
from lab.payloads.probe import parse as parse_probe
from lab.payloads.variants import variant

log = logging.getLogger(__name__)

TRACER_VARIANT = "glibc-static"  # the tracer is static: one binary per arch runs in every image
TRACER_REMOTE = f"{engine.REMOTE_DIR}/fault-trace"
KERNEL_IPS = f"{engine.REMOTE_DIR}/kernel-ips"  # the IPs to name, shipped as a file (no command-line limit)
LD_STATS = "LD_DEBUG=statistics"


def build_tracer(cfg: Config, arch: Arch, suite: str | None = None) -> Payload:
    return PayloadStore(cfg, suite=suite, program=TRACER).ensure(arch, variant(TRACER_VARIANT))


def guest_files(cfg: Config, image: Image, suite: str | None, uploads: Mapping[str, Path]) -> GuestFiles:
    """The guest's files on the host, with the suite's glibc debug symbols (fetched once, cached)."""
    store = ImageStore(cfg, suite)
    with store.apt_lock():  # apt's lists and download pool are shared with image and sysroot builds
        debug = debug_symbols(store.apt, image.arch.debian, cfg.cache_dir, cfg.timeouts.scaled("lock"))
    return GuestFiles(image.initrd, uploads, debug)


def install_tracer(guest: Guest, tracer: Payload) -> str:
    guest.run(f"mkdir -p {engine.REMOTE_DIR}")
    guest.put(tracer.binary, TRACER_REMOTE)
    return TRACER_REMOTE


@dataclass(frozen=True)
class Traced:
    """One traced cell: its account as stored (render.to_dict), or why there is none."""

    key: engine.CellKey
    data: dict[str, Any] | None
    error: str | None = None


def medians(results: Sequence[ProbeResult]) -> dict[str, tuple[float, float]]:
    """Per stage, the median (minor, major) delta of untraced runs."""
    names = [s.name for s in results[0].stages] if results else []
    return {
        n: (
            float(statistics.median(r.stage(n).delta_minflt for r in results)),
            float(statistics.median(r.stage(n).delta_majflt for r in results)),
        )
        for n in names
    }


def _thp_always(probe: ProbeResult) -> bool:
    return "[always]" in probe.facts.thp


def account_for_probe(
    cell: str,
    trace: trace_mod.Trace,
    files: GuestFiles,
    remote: str,
    untraced: Mapping[str, tuple[float, float]] | None,
    kernel: Mapping[int, str],
) -> tuple[account_mod.Account, list[checks_mod.Check], ProbeResult]:
    try:
        probe = parse_probe(trace.stdout)
    except ProbeOutputError as exc:
        raise InfraError(f"{cell}: the traced probe's output: {exc.message}", exc.remedy) from None
    acc = account_mod.attribute(
        cell,
        trace,
        files.load,
        [(s.name, s.t) for s in probe.stages],
        exe=remote,
        probe_stages={s.name: (s.delta_minflt, s.delta_majflt) for s in probe.stages},
        realpath=files.realpath,
        kernel=kernel,
    )
    pages = None if _thp_always(probe) else probe.facts.buffer_pages
    return acc, checks_mod.check(acc, untraced, pages), probe


def trace_cells(
    guest: Guest,
    files: GuestFiles,
    remotes: Mapping[str, str],
    sizes: Sequence[int],
    file_bytes: int,
    points: Sequence[Mapping[str, str]],
    per_run_seconds: int,
    set_thp: bool,
    untraced: Mapping[engine.CellKey, Sequence[ProbeResult]],
    cell_name: Callable[[engine.CellKey], str],
    arch: str,
) -> list[Traced]:
    """Trace every (variant, size, point) once; glibc's dynamic variants also print LD_DEBUG statistics."""
    jobs = [
        engine.point_job(f"t:{name}:{size}:{pi}", remotes[name], size, file_bytes, point, set_thp, tracer=TRACER_REMOTE)
        for pi, point in enumerate(points)
        for size in sizes
        for name in remotes
    ]
    stats = [n for n in remotes if (variant(n).libc, variant(n).linkage) == ("glibc", "dynamic")]  # LD_DEBUG is glibc's loader's
    jobs += [batch.Job.shell(f"ld:{n}", f"{LD_STATS} {shlex.quote(remotes[n])} --size 4096 --no-reexec 2>&1 >/dev/null") for n in stats]
    _, results = engine.run_batch(guest, jobs, per_run_seconds)
    outcomes = dict(zip((j.key for j in jobs), results, strict=True))
    parsed: dict[engine.CellKey, trace_mod.Trace] = {}
    out = []
    for job in jobs:
        if not job.key.startswith("t:"):
            continue
        _, name, size_text, pi = job.key.split(":")
        key = (name, int(size_text), int(pi))
        o = outcomes[job.key]
        problem = trace_mod.refusal(o.status, o.stderr, remotes[name]) if o.status != -1 else InfraError(f"no result: {o.stderr}")
        if problem is not None and o.status == trace_mod.EXIT_REFUSED:
            raise problem  # the kernel refuses every traced run alike
        try:
            if problem is not None:
                raise problem
            parsed[key] = trace_mod.parse(o.stdout)
        except LabError as exc:
            out.append(Traced(key, None, f"{cell_name(key)}: {exc.message}"))
    kernel = kernel_names(guest, {ip for t in parsed.values() for ip in t.kernel_ips()})
    for key, trace in parsed.items():
        name, cell = key[0], cell_name(key)
        try:
            acc, checks, probe = account_for_probe(cell, trace, files, remotes[name], medians(untraced.get(key, ())) or None, kernel)
        except LabError as exc:
            out.append(Traced(key, None, f"{cell}: {exc.message}"))
            continue
        ld = outcomes.get(f"ld:{name}")
        notes = (ld_statistics(ld.stdout),) if ld and ld.stdout.strip() else ()
        extra = {"arch": arch, "variant": name, "buffer_size": key[1], "kernel": probe.facts.kernel, "thp": probe.facts.thp}
        out.append(Traced(key, render.to_dict(replace(acc, notes=notes), checks, extra)))
    return out


def kernel_names(guest: Guest, ips: set[int]) -> dict[int, str]:
    """Name kernel IPs in the guest (one pass over its /proc/kallsyms for the whole batch); unnamed on failure."""
    if not ips:
        return {}
    guest.put_bytes("".join(f"{ip}\n" for ip in sorted(ips)).encode(), KERNEL_IPS)
    result = guest.run(f"{shlex.quote(TRACER_REMOTE)} --kernel-symbols {KERNEL_IPS}")
    try:
        return {int(k): str(v) for k, v in json.loads(result.stdout).items()} if result.exited == 0 else {}
    except (ValueError, AttributeError):
        return {}


def ld_statistics(text: str) -> str:
    """glibc's loader statistics as a note: one line per figure, without the PID prefixes."""
    lines = [ln.split(":", 1)[-1].strip() for ln in text.splitlines()]
    return f"{LD_STATS}:\n" + "\n".join(f"  {ln}" for ln in lines if ln and ln != "runtime linker statistics:")


def trace_program(guest: Guest, files: GuestFiles, argv: Sequence[str], cell: str, per_run_seconds: int) -> account_mod.Account:
    """Any program in the guest (or uploaded there), traced once from exec to exit."""
    command = f"{shlex.quote(TRACER_REMOTE)} -- {shlex.join(argv)}"
    result = guest.run(command, timeout=per_run_seconds + 30)
    problem = trace_mod.refusal(result.exited, result.stderr, argv[0])
    if problem is not None:
        raise problem
    trace = trace_mod.parse(result.stdout)
    exe = files.realpath(argv[0]) if argv[0].startswith("/") else None
    kernel = kernel_names(guest, trace.kernel_ips())
    return account_mod.attribute(cell, trace, files.load, exe=exe, realpath=files.realpath, kernel=kernel)
