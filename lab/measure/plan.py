"""What to measure: a request (the command line's run options, as text) validated into a :class:`Plan`.

Pure apart from reading the host's core count and memory for the default
number of parallel guests. Every bad value is a :class:`UserError` naming the
option and the allowed values, raised before anything is built or booted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from lab import arches
from lab.arches import Arch
from lab.config import Config
from lab.errors import UserError
from lab.payloads import variants
from lab.payloads.variants import Variant
from lab.text import parse_size


@dataclass(frozen=True)
class RunRequest:
    """The run options of ``lab run``/``lab nightly``/``lab probe``; None means "from lab.yaml"."""

    arch: str | None = None  # "all" or "x86_64,arm64"
    libc: str | None = None  # "glibc,musl"
    linkage: str | None = None  # "static,dynamic"
    variant: str | None = None  # explicit variants instead of libc x linkage
    repeat: int | None = None
    jobs: int | None = None
    size: str | None = None  # "1M,8M"
    accel: str | None = None  # auto | kvm | tcg
    out: Path | None = None  # results directory for the run directory


@dataclass(frozen=True)
class Plan:
    arches: tuple[Arch, ...]
    variants: tuple[Variant, ...]
    sizes: tuple[int, ...]
    repeat: int
    jobs: int
    file_bytes: int
    accel: str | None = None


def default_jobs(arch_count: int) -> int:
    """Guests at once: one per core, at most one per 2 GiB of RAM, at most one per arch."""
    cores = os.cpu_count() or 1
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = 2.0
    return max(1, min(cores, int(mem_gib // 2), arch_count))


def size(text: str, flag: str = "--size") -> int:
    """A size from the command line, as a user error when malformed."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise UserError(f"{flag}: {exc}", "e.g. --size 1M,8M") from None


def _choices(flag: str, given: str | None, default: tuple[str, ...], allowed: tuple[str, ...]) -> list[str]:
    values = [v.strip() for v in given.split(",") if v.strip()] if given is not None else list(default)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise UserError(f"{flag} {given!r} is not valid", "use a comma-separated list of " + ", ".join(allowed))
    return values


def make_plan(cfg: Config, req: RunRequest) -> Plan:
    # None means "from lab.yaml"; an empty string is an empty selection, which is a usage error.
    selected = arches.select(req.arch if req.arch is not None else cfg.arches)
    if req.variant is not None:
        chosen = variants.select_variants(req.variant)
    else:
        libcs = _choices("--libc", req.libc, cfg.run.libcs, variants.libcs())
        linkages = _choices("--linkage", req.linkage, cfg.run.linkages, variants.linkages())
        chosen = [v for v in variants.VARIANTS if v.libc in libcs and v.linkage in linkages]
    repeat = req.repeat if req.repeat is not None else cfg.run.repeat
    if repeat < 1:
        raise UserError(f"--repeat {repeat} is not valid", "use 1 or more (5 gives a useful median)")
    jobs = req.jobs if req.jobs is not None else (cfg.run.jobs or default_jobs(len(selected)))
    if jobs < 1:
        raise UserError(f"--jobs {jobs} is not valid", "use 1 or more")
    given = [s for s in req.size.split(",") if s.strip()] if req.size is not None else list(cfg.run.sizes)
    if not given:
        raise UserError(f"--size {req.size!r} is not valid", "e.g. --size 1M,8M")
    sizes = [size(s) for s in given]
    file_bytes = size(cfg.run.file_bytes, "run.file_bytes")
    if not chosen:
        raise UserError("no variant matches --libc/--linkage", "variants: " + ", ".join(variants.names()))
    return Plan(tuple(selected), tuple(chosen), tuple(dict.fromkeys(sizes)), repeat, jobs, file_bytes, req.accel)


def with_out(cfg: Config, out: Path | None) -> Config:
    """``cfg`` with its results directory moved to ``out`` (``--out``)."""
    return replace(cfg, results_dir=Path(out).resolve()) if out else cfg
