"""The architecture table: the only place an architecture name is a literal.

Adding an architecture is adding a row to :data:`ARCHES`; the argv builder,
image builder, doctor and tests iterate over the table.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from lab.errors import UserError


@dataclass(frozen=True)
class Arch:
    """Everything lab needs to know about one guest architecture."""

    name: str  # lab's canonical name, also `uname -m` in the guest unless `uname` differs
    uname: str  # what `uname -m` prints in the guest
    aliases: tuple[str, ...]
    debian: str  # Debian architecture (package suffix, apt arch)
    triplet: str  # GNU multiarch triplet
    qemu_binary: str
    machine: str
    cpu: str  # CPU model under TCG
    kvm_cpu: str  # CPU model under KVM
    console: str  # guest console device, for the kernel's console=
    host_machines: tuple[str, ...]  # `platform.machine()` values that can run this arch under KVM
    bios: str | None = None  # firmware passed with -bios, if the machine needs one: a path relative to a QEMU's root (/)
    bios_package: str | None = None  # the Debian package providing the firmware
    # The Debian packages that provide qemu_binary, newest name first: a suite's QEMU uses the first it has.
    qemu_packages: tuple[str, ...] = ()
    elf_machine: str = ""  # e_machine of its binaries, as pyelftools names it (checks an uploaded binary's arch)
    kernel_format: str = "as-is"  # "pvh": boot the ELF vmlinux unpacked from the bzImage (faster under TCG)
    # The first QEMU release whose restored guests of this arch work (lab.guests.snapshots); older ones boot cold.
    snapshots_since: tuple[int, ...] = (0,)

    def snapshots_work(self, qemu_release: tuple[int, ...]) -> bool:
        return qemu_release >= self.snapshots_since


ARCHES: tuple[Arch, ...] = (
    Arch(
        name="x86_64",
        elf_machine="EM_X86_64",
        uname="x86_64",
        aliases=("amd64", "x86-64"),
        debian="amd64",
        triplet="x86_64-linux-gnu",
        qemu_binary="qemu-system-x86_64",
        machine="q35",
        cpu="max",
        kvm_cpu="host",
        console="ttyS0",
        host_machines=("x86_64", "amd64"),
        qemu_packages=("qemu-system-x86",),
        kernel_format="pvh",
    ),
    Arch(
        name="arm64",
        elf_machine="EM_AARCH64",
        uname="aarch64",
        aliases=("aarch64",),
        debian="arm64",
        triplet="aarch64-linux-gnu",
        qemu_binary="qemu-system-aarch64",
        machine="virt",
        cpu="max,pauth-impdef=on",
        kvm_cpu="host",
        console="ttyAMA0",
        host_machines=("aarch64", "arm64"),
        qemu_packages=("qemu-system-arm",),
    ),
    Arch(
        name="riscv64",
        elf_machine="EM_RISCV",
        uname="riscv64",
        aliases=("riscv", "rv64"),
        debian="riscv64",
        triplet="riscv64-linux-gnu",
        qemu_binary="qemu-system-riscv64",
        # Restored riscv64 guests of QEMU < 10.2 sometimes never fire a timer again (`sleep 1` hangs, and with it
        # the per-run watchdog): the ACLINT mtimer's and Sstc timers' state was not migrated ("Fix RISC-V timer
        # migration issues", first in QEMU 10.2.0). With an older QEMU every riscv64 guest boots cold.
        snapshots_since=(10, 2),
        machine="virt",
        cpu="rv64",
        kvm_cpu="host",
        console="ttyS0",
        host_machines=("riscv64",),
        bios="usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin",
        bios_package="opensbi",
        qemu_packages=("qemu-system-riscv", "qemu-system-misc"),  # QEMU >= 10 has a riscv package
    ),
)

_BY_NAME: dict[str, Arch] = {}
for _arch in ARCHES:
    for _key in (_arch.name, _arch.uname, _arch.debian, *_arch.aliases):
        _BY_NAME[_key.lower()] = _arch


def names() -> list[str]:
    return [a.name for a in ARCHES]


def get(name: str) -> Arch:
    """Look up an arch by name or alias; unknown names fail listing the valid ones."""
    try:
        return _BY_NAME[name.strip().lower()]
    except KeyError:
        valid = ", ".join(names())
        raise UserError(
            f"unknown arch {name!r}",
            f"use one of: {valid}, or 'all' (aliases: " + ", ".join(sorted(k for k in _BY_NAME if k not in names())) + ")",
        ) from None


def select(spec: str) -> list[Arch]:
    """Parse ``all`` or a comma-separated list into arches, in table order, without duplicates."""
    if spec.strip().lower() == "all":
        return list(ARCHES)
    picked = {get(part).name for part in spec.split(",") if part.strip()}
    if not picked:
        raise UserError("empty arch list", "use 'all' or e.g. 'x86_64,arm64'")
    return [a for a in ARCHES if a.name in picked]


def host() -> Arch | None:
    """The row of this host's own CPU architecture (its Debian architecture and triplet), if lab knows it."""
    machine = platform.machine().lower()
    return next((a for a in ARCHES if machine in a.host_machines), None)


def host_can_kvm(arch: Arch, machine: str | None = None) -> bool:
    """Whether this host's CPU architecture matches ``arch`` (a precondition for KVM)."""
    return (machine or platform.machine()).lower() in arch.host_machines
