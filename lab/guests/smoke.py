"""``lab smoke``: boot each arch and check what measurements rely on inside the guest.

A real boot of every selected architecture, real SSH, and the facts the probe's
numbers depend on (machine, page size, THP mode, scratch disk), without
touching the results store; the only payload it needs is the small reseed helper that
lets a guest be restored from its snapshot (without it the guest boots cold).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab import axes
from lab.arches import Arch
from lab.config import Config
from lab.errors import LabError
from lab.guests.boot import boot
from lab.guests.images import ImageStore
from lab.guests.protocol import SCRATCH_MOUNT

log = logging.getLogger(__name__)

FACTS = {
    "machine": "uname -m",
    "kernel": "uname -r",
    "page_size": "awk '/KernelPageSize/ {print $2 * 1024; exit}' /proc/self/smaps",
    "thp": "cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo none",  # none: a kernel without THP
    # the userland's word size: EI_CLASS of /init's shell (1: 32-bit, 2: 64-bit)
    "elf_class": "od -An -tu1 -j4 -N1 /bin/busybox",
    "scratch": f"awk '$2 == \"{SCRATCH_MOUNT}\" {{print $1, $3}}' /proc/mounts",
    "mem_used_kib": "awk '/MemTotal/ {t=$2} /MemAvailable/ {a=$2} END {print t - a}' /proc/meminfo",
}


@dataclass(frozen=True)
class SmokeResult:
    arch: str
    ok: bool
    accel: str = ""
    ssh_seconds: float = 0.0
    facts: tuple[tuple[str, str], ...] = ()
    problems: tuple[str, ...] = ()
    error: str = ""
    console_log: str = ""


def check_facts(arch: Arch, facts: dict[str, str], thp: str, scratch: str, page_size: int = 0) -> list[str]:
    """What is wrong with a guest's facts (pure); ``page_size``: its kernel flavour's (0: unchecked)."""
    problems = []
    if facts.get("machine") != arch.uname:
        problems.append(f"uname -m is {facts.get('machine')!r}, expected {arch.uname!r}")
    if not facts.get("page_size", "").isdigit():
        problems.append(f"page size unreadable: {facts.get('page_size')!r}")
    elif page_size and int(facts["page_size"]) != page_size:
        problems.append(f"page size is {facts['page_size']}, expected its kernel flavour's {page_size}")
    if f"[{thp}]" not in facts.get("thp", "") and not (thp == "never" and facts.get("thp") == "none"):
        problems.append(f"THP is {facts.get('thp')!r}, expected [{thp}]")
    bits = {"1": 32, "2": 64}.get(facts.get("elf_class", "").strip())
    if bits != arch.bits:
        problems.append(f"the userland is {bits or facts.get('elf_class')!r}-bit, expected {arch.bits}-bit")
    want = f"{axes.scratch_device(scratch, arch.disk)} ext4"  # guest.scratch's device (lab.axes.SCRATCHES)
    if facts.get("scratch") != want:
        problems.append(f"scratch is {facts.get('scratch')!r}, expected {want!r} (guest.scratch: {scratch})")
    return problems


def smoke(
    cfg: Config, arch: Arch, store: ImageStore, accel: str | None = None, reseed: Callable[[Arch], Path | None] | None = None
) -> SmokeResult:
    """Boot ``arch`` and check it; failures become a result, never an exception (except Ctrl-C).
    ``reseed`` builds the arch's reseed helper (lab.guests.boot: restores need it)."""
    try:
        image = store.ensure(arch)
        with boot(cfg, image, accel, reseed=reseed(arch) if reseed else None) as b:
            facts = {}
            for key, command in FACTS.items():
                result = b.guest.run(command)
                facts[key] = result.stdout.strip() if result.ok else f"error: {result.stderr.strip()}"
            flavour = 0 if image.manifest.get("kernel_file") else image.flavour.bytes  # a user's kernel: its own
            problems = check_facts(arch, facts, cfg.guest.transparent_hugepage, cfg.guest.scratch, flavour)
            return SmokeResult(
                arch.name,
                not problems,
                b.info.accel,
                b.info.ssh_seconds,
                tuple(facts.items()),
                tuple(problems),
                console_log=str(b.info.console_log),
            )
    except LabError as exc:
        log.error("%s: %s", arch.name, exc)
        logs = ", ".join(str(p) for p in exc.logs)
        return SmokeResult(arch.name, False, error=str(exc), console_log=logs)
