"""What to measure: a request (the command line's run options, as text) validated into a :class:`Plan`.

Pure apart from reading the host's core count and memory for the default
number of parallel guests. Every bad value is a :class:`UserError` naming the
option and the allowed values, raised before anything is built or booted.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from lab import arches
from lab import axes as axes_mod
from lab.arches import Arch
from lab.config import Config
from lab.errors import UserError
from lab.guests.recipes import Recipe, load_recipe
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
    axis: tuple[str, ...] = ()  # "thp=never,always", "suite=trixie,forky" (lab.axes); replaces run.axes per axis
    explain: bool = False  # also one traced run per cell (lab.measure.tracing), stored apart from the samples
    cold_boot: bool = False  # boot every guest cold (no snapshot restore; lab.guests.snapshots)


@dataclass(frozen=True)
class Plan:
    arches: tuple[Arch, ...]
    variants: tuple[Variant, ...]
    sizes: tuple[int, ...]
    repeat: int
    jobs: int
    file_bytes: int
    accel: str | None = None
    axes: tuple[tuple[str, tuple[str, ...]], ...] = ()  # every axis with its values in this run, table order
    defaults: tuple[tuple[str, str], ...] = ()  # every axis's default (the identity of a cell leaves these out)
    explain: bool = False
    cold_boot: bool = False

    def values(self, name: str) -> tuple[str, ...]:
        return dict(self.axes).get(name) or (dict(self.defaults)[name],)

    @property
    def suites(self) -> tuple[str, ...]:
        return self.values("suite")

    def labels(self) -> list[str]:
        """One progress label per guest: the arch, plus each boot axis's value where the run spans several."""
        several = [a.name for a in axes_mod.AXES if a.where == "boot" and len(self.values(a.name)) > 1]
        return [a.name + "".join(f"/{b[n]}" if n == "suite" else f"/{n}-{b[n]}" for n in several) for a, b in self.groups()]

    def boot_points(self) -> list[dict[str, str]]:
        """Every combination of the boot axes' values (one guest per arch each), in table order."""
        names = [a.name for a in axes_mod.AXES if a.where == "boot"]
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(self.values(n) for n in names))]

    def groups(self) -> list[tuple[Arch, dict[str, str]]]:
        """(arch, boot point) of every guest: the arches each suite ships (bookworm has no riscv64)."""
        return [(a, b) for b in self.boot_points() for a in self.arches if a.debian in axes_mod.suite(b["suite"]).debian]

    def skipped(self) -> list[str]:
        return [f"Debian {s} does not ship {a.name}: its cells are skipped" for s in self.suites for a in self.arches
                if a.debian not in axes_mod.suite(s).debian]  # fmt: skip

    def run_points(self) -> list[dict[str, str]]:
        """Every combination of the run axes' values, in table order."""
        names = [a.name for a in axes_mod.AXES if a.where == "run"]
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(self.values(n) for n in names))]

    def identity(self, boot: Mapping[str, str], point: Mapping[str, str]) -> str:
        """A cell's axes (lab.axes.identity) from its guest's boot point and its run point."""
        return axes_mod.identity({**boot, **point}, dict(self.defaults))


def default_jobs(guests: int) -> int:
    """Guests at once: one per core, at most one per 2 GiB of RAM, at most one per guest of the run."""
    cores = os.cpu_count() or 1
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = 2.0
    return max(1, min(cores, int(mem_gib // 2), guests))


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


def _check_scratch(cfg: Config, recipe: Recipe, file_bytes: int, scratches: tuple[str, ...]) -> None:
    """Settings the scratch file system cannot serve: more of the test file than it holds; a RAM disk (the whole
    scratch image, in guest memory) that leaves the guest less than half its memory."""
    if file_bytes > recipe.test_file_mib << 20:
        raise UserError(
            f"run.file_bytes: {cfg.run.file_bytes} is more than the scratch test file ({recipe.test_file_mib} MiB)",
            f"raise scratch.test_file_mib (and scratch.size_mib) in {recipe.path}, or lower run.file_bytes",
        )
    if "ram" in scratches and recipe.scratch_size_mib * 2 > cfg.guest.memory_mib:
        raise UserError(
            f"guest.scratch: ram puts the {recipe.scratch_size_mib} MiB scratch image ({recipe.path}) in the guest's "
            f"{cfg.guest.memory_mib} MiB of memory: more than half of it",
            "raise guest.memory_mib, shrink scratch.size_mib, or use guest.scratch: disk",
        )


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
    if req.jobs is not None and req.jobs < 1:
        raise UserError(f"--jobs {req.jobs} is not valid", "use 1 or more")
    given = [s for s in req.size.split(",") if s.strip()] if req.size is not None else list(cfg.run.sizes)
    if not given:
        raise UserError(f"--size {req.size!r} is not valid", "e.g. --size 1M,8M")
    sizes = [size(s) for s in given]
    file_bytes = size(cfg.run.file_bytes, "run.file_bytes")
    recipe = load_recipe(cfg.recipe)
    chosen_axes = {**cfg.run.axes, **axes_mod.parse(req.axis)}
    _check_scratch(cfg, recipe, file_bytes, chosen_axes.get("scratch", (cfg.guest.scratch,)))
    if not chosen:
        raise UserError("no variant matches --libc/--linkage", "variants: " + ", ".join(variants.names()))
    defaults = {
        "suite": recipe.suite,
        "qemu": cfg.qemu.origin,
        "scratch": cfg.guest.scratch,
        "thp": cfg.guest.transparent_hugepage,
        "cache": "cold",
        "order": "random",
        "tunables": "",
    }
    for name in chosen_axes.get("suite", ()):
        axes_mod.suite(name)
    ordered = tuple((a.name, chosen_axes[a.name]) for a in axes_mod.AXES if a.name in chosen_axes)
    plan = Plan(tuple(selected), tuple(chosen), tuple(dict.fromkeys(sizes)), repeat, 1, file_bytes, req.accel, ordered,
                tuple(defaults.items()))  # fmt: skip
    if not plan.groups():
        raise UserError("no arch of this run is shipped by its suites: " + "; ".join(plan.skipped()), "pick other arches or suites")
    # One guest per (arch, suite): the default parallelism counts guests, not arches.
    jobs = req.jobs if req.jobs is not None else (cfg.run.jobs or default_jobs(len(plan.groups())))
    return replace(plan, jobs=jobs, explain=req.explain, cold_boot=req.cold_boot)


def with_out(cfg: Config, out: Path | None) -> Config:
    """``cfg`` with its run directories moved to ``out`` (``--out``); the store stays where lab.yaml (or the global
    ``--results DIR`` / ``LAB_RESULTS``) puts it, so the read commands and baselines find the run."""
    return replace(cfg, results_dir=Path(out).resolve()) if out else cfg
