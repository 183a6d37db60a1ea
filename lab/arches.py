"""The architecture table: the only place an architecture name is a literal.

Adding an architecture is adding a row to :data:`ARCHES`; the argv builder,
image builder, doctor and tests iterate over the table.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from lab.errors import UserError


@dataclass(frozen=True)
class Flavour:
    """A kernel flavour of an arch: its page size (the ``pagesize`` axis) and the Debian kernel that has it."""

    pagesize: str  # the pagesize axis's value: 4k, 16k, 64k
    bytes: int
    kernel: str  # the Debian kernel flavour: linux-image-{flavour}
    suites: tuple[str, ...] = ()  # the suites whose kernels have it (() = every suite that ships the arch)
    cpu: str = ""  # the TCG CPU model it needs, if not the row's


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
    flavours: tuple[Flavour, ...] = ()  # its kernel flavours, the default (the first) included
    virtio: str = "pci"  # the virtio transport of its machine: QEMU's devices are virtio-net-{virtio}, virtio-blk-{virtio}
    disk: str = "vda"  # the guest's name of the scratch disk (/dev/{disk})
    musl: str = ""  # musl's name of the arch (ld-musl-{musl}.so.1, {musl}-linux-musl); "" = uname
    kernel_base: int = 1 << 63  # where the kernel's addresses start (explain: a sample at or above it is in the kernel)
    cpuinfo_keys: tuple[str, ...] = ("model name",)  # /proc/cpuinfo keys naming the host CPU (KVM cells record it)
    modules: tuple[str, ...] = ()  # kernel modules its guests load besides the recipe's (e.g. its virtio transport)
    # The Debian suites (lab.axes.SUITES) that ship it: its guests' userland and kernels come from these
    suites: tuple[str, ...] = ("bookworm", "bookworm-backports", "trixie", "trixie-backports", "forky")
    kernel_magic: tuple[int, bytes] = (0, b"")  # where its boot image format's magic is, and what (a user's --kernel)

    @property
    def boot_modules(self) -> tuple[str, ...]:
        """The modules its guests load besides the recipe's: its virtio transport's driver where the kernel has it
        as a module (Debian 6.1's amd64 kernel does; later ones build it in), and the row's own."""
        return (f"virtio_{self.virtio}?", *self.modules)

    @property
    def musl_name(self) -> str:
        return self.musl or self.uname

    def flavour(self, pagesize: str = "") -> Flavour | None:
        """Its flavour with that page size (``""``: the default), None if it has none."""
        if not pagesize:
            return self.flavours[0]
        return next((f for f in self.flavours if f.pagesize == pagesize), None)

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
        flavours=(Flavour("4k", 4096, "amd64"),),
        kernel_magic=(0x202, b"HdrS"),  # a bzImage's setup header
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
        # -cpu max has 16 KiB granules (cortex-a57 has not); Debian has a 16k kernel from 6.12 on (bookworm-backports, trixie)
        flavours=(
            Flavour("4k", 4096, "arm64"),
            Flavour("16k", 16384, "arm64-16k", ("bookworm-backports", "trixie", "trixie-backports", "forky")),
        ),
        cpuinfo_keys=("Hardware",),
        kernel_magic=(0x38, b"ARMd"),  # the arm64 Image header
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
        flavours=(Flavour("4k", 4096, "riscv64"),),
        cpuinfo_keys=("uarch",),
        suites=("trixie", "trixie-backports", "forky"),  # Debian 12 ships no riscv64
        kernel_magic=(0x38, b"RSC\x05"),  # the RISC-V Image header
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
