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

from lab import arches, spec
from lab import axes as axes_mod
from lab.arches import Arch
from lab.config import Config
from lab.errors import UserError
from lab.guests.kernel_file import kernel_file
from lab.guests.recipes import Recipe, load_recipe
from lab.payloads import variants
from lab.payloads.variants import Variant
from lab.spec import GuestSpec, KernelFile
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
    kernel: Path | None = None  # a user's own kernel file (the kernel axis's one value; guest.kernel in lab.yaml)
    modules: Path | None = None  # its modules: a directory or a .deb


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
    kernel_file: KernelFile | None = None  # --kernel FILE: every guest boots it (the kernel axis's one value)

    def values(self, name: str) -> tuple[str, ...]:
        return dict(self.axes).get(name) or (dict(self.defaults)[name],)

    @property
    def suites(self) -> tuple[str, ...]:
        return self.values("suite")

    def labels(self) -> list[str]:
        """One progress label per guest: the arch, plus each boot axis's value where the run spans several."""
        several = [a.name for a in axes_mod.AXES if a.where == "boot" and len({str(b[a.name]) for b in self.boot_points()}) > 1]
        return [g.arch.name + "".join(f"/{g.boot()[n]}" if n == "suite" else f"/{n}-{g.boot()[n]}" for n in several)
                for g in self.groups()]  # fmt: skip

    def boot_points(self) -> list[dict[str, str]]:
        """Every combination of the boot axes' values (one guest per arch each), in table order; a kernel that
        follows the suite (a recipe's ``kernel.from: suite``) is that suite's."""
        names = [a.name for a in axes_mod.AXES if a.where == "boot"]
        points = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(self.values(n) for n in names))]
        return list({str(p): p for p in ({**p, "kernel": p["kernel"] or p["suite"]} for p in points)}.values())

    def _specs(self) -> list[GuestSpec]:
        given = dict(self.axes)
        return list({g: g for g in (spec.make(a, b, self.kernel_file, given) for b in self.boot_points() for a in self.arches)})

    def groups(self) -> list[GuestSpec]:
        """Every guest of the run: an arch at a boot point that Debian can make (bookworm has no riscv64, nor
        trixie's kernel a 16k flavour for it: lab.spec.GuestSpec.problem)."""
        return [g for g in self._specs() if not g.problem()]

    def skipped(self) -> list[str]:
        return list(dict.fromkeys(f"{p}: its cells are skipped" for g in self._specs() if (p := g.problem())))

    def run_points(self) -> list[dict[str, str]]:
        """Every combination of the run axes' values, in table order."""
        names = [a.name for a in axes_mod.AXES if a.where == "run"]
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(self.values(n) for n in names))]

    def identity(self, guest: GuestSpec, point: Mapping[str, str]) -> str:
        """A cell's axes (lab.axes.identity: absolute) from its guest's boot point and its run point."""
        return axes_mod.identity({**guest.boot(), **point})


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
    kernel_file = _kernel_file(cfg, req, selected, chosen_axes, recipe)
    if kernel_file is not None:
        chosen_axes["kernel"] = (kernel_file.value,)
    defaults = {
        "suite": recipe.suite,
        "kernel": recipe.suite if recipe.kernel_from == "recipe" else "",  # "": each suite's own
        "pagesize": axes_mod.get("pagesize").default,
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
                tuple(defaults.items()), kernel_file=kernel_file)  # fmt: skip
    if not plan.groups():
        raise UserError("Debian cannot make any guest of this run: " + "; ".join(plan.skipped()),
                        "pick other arches, suites, kernels or page sizes (lab.arches lists each arch's)")  # fmt: skip
    # One guest per (arch, suite): the default parallelism counts guests, not arches.
    jobs = req.jobs if req.jobs is not None else (cfg.run.jobs or default_jobs(len(plan.groups())))
    return replace(plan, jobs=jobs, explain=req.explain, cold_boot=req.cold_boot)


def _kernel_file(
    cfg: Config, req: RunRequest, selected: list[Arch], chosen: Mapping[str, tuple[str, ...]], recipe: Recipe
) -> KernelFile | None:
    """--kernel FILE (or guest.kernel): checked for the run's one arch, its release and modules, before anything."""
    path, modules = (req.kernel, req.modules) if req.kernel is not None else (cfg.guest.kernel, cfg.guest.modules)
    if path is None:
        if req.modules is not None:
            raise UserError("--modules needs --kernel FILE", "give the kernel the modules belong to")
        return None
    if "kernel" in chosen:
        raise UserError("--kernel FILE and the kernel axis both name the kernel", "drop --axis kernel=... (or run.axes.kernel)")
    if len(selected) != 1:
        raise UserError(f"--kernel {path}: a kernel file boots one arch, and this run has {len(selected)}",
                        "add --arch ARCH (the kernel's)")  # fmt: skip
    return kernel_file(selected[0], path, modules, recipe.modules + selected[0].boot_modules)


def with_out(cfg: Config, out: Path | None) -> Config:
    """``cfg`` with its run directories moved to ``out`` (``--out``); the store stays where lab.yaml (or the global
    ``--results DIR`` / ``LAB_RESULTS``) puts it, so the read commands and baselines find the run."""
    return replace(cfg, results_dir=Path(out).resolve()) if out else cfg
