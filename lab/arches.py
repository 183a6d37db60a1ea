"""The architecture table: the only place an architecture name is a literal.

Adding an architecture is adding a row to :data:`ARCHES`; the argv builder,
image builder, doctor and tests iterate over the table.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, replace

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
    # None: no release lab has measured restores it reliably, so it always boots cold.
    snapshots_since: tuple[int, ...] | None = (0,)
    flavours: tuple[Flavour, ...] = ()  # its kernel flavours, the default (the first) included
    virtio: str = "pci"  # the virtio transport of its machine: QEMU's devices are virtio-net-{virtio}, virtio-blk-{virtio}
    disk: str = "vda"  # the guest's name of the scratch disk (/dev/{disk})
    musl: str = ""  # musl's name of the arch (its loader: ld-musl-{musl}.so.1); "" = uname
    musl_target: str = ""  # musl's triplet (Debian's directories, clang's --target); "" = {musl}-linux-musl
    cflags: tuple[str, ...] = ()  # compiler flags every payload of it gets: Debian's baseline ISA where clang's differs
    cpuinfo_keys: tuple[str, ...] = ("model name",)  # /proc/cpuinfo keys naming the host CPU (KVM cells record it)
    modules: tuple[str, ...] = ()  # kernel modules its guests load besides the recipe's (e.g. its virtio transport)
    # The Debian suites (lab.axes.SUITES) that ship it: its guests' userland and kernels come from these
    suites: tuple[str, ...] = ("bookworm", "bookworm-backports", "trixie", "trixie-backports", "forky")
    kernel_magic: tuple[int, bytes] = (0, b"")  # where its boot image format's magic is, and what (a user's --kernel)
    # The Debian architecture of its kernels when not its own: Debian's i386 is a userland for amd64's kernel
    kernel_debian: str = ""
    # Suites its guests take in place of others when the run does not name the suite or kernel axis: one it does
    # not ship, or whose .debs the mirror lacks (trixie's ppc64el and s390x glibc and kernels answer 404). The
    # cells record what ran (their suite and kernel axes)
    instead: tuple[tuple[str, str], ...] = ()
    in_all: bool = True  # --arch all runs it; --arch everything runs every row
    bits: int = 64  # its userland's word size (the probe reports its own; a cell that differs is an error)
    # Faults a first memset takes per page under TCG (measured; lab explain shows them per page). s390x's takes 2:
    # clang inlines memset as MVI + overlapping MVC, and QEMU's MVC checks its source operand before its destination
    # (target/s390x/tcg/mem_helper.c, do_helper_mvc), so the page is fetched (the kernel maps the zero page) before
    # it is stored (the kernel copies it). The architecture leaves that order open: z hardware is unmeasured here.
    tcg_touch_faults: int = 1

    @property
    def boot_modules(self) -> tuple[str, ...]:
        """The modules its guests load besides the recipe's: its virtio transport's driver where the kernel has it
        as a module (Debian 6.1's amd64 kernel does; later ones build it in), and the row's own."""
        return (f"virtio_{self.virtio}?", *self.modules)

    @property
    def musl_name(self) -> str:
        return self.musl or self.uname

    @property
    def musl_triplet(self) -> str:
        return self.musl_target or f"{self.musl_name}-linux-musl"

    @property
    def kernel_arch(self) -> str:
        """The Debian architecture of its kernel packages."""
        return self.kernel_debian or self.debian

    def instead_of(self, suite: str) -> str:
        """The suite its guests take when the run's default suite (or kernel suite) is ``suite``."""
        return dict(self.instead).get(suite, suite)

    def flavour(self, pagesize: str = "", suite: str = "") -> Flavour | None:
        """Its flavour with that page size (``""``: the default) in the kernel suite ``suite`` (the first whose
        suites have it; ``""``: any), None if it has none."""
        if not pagesize:
            return self.flavours[0]
        found = [f for f in self.flavours if f.pagesize == pagesize]
        return next((f for f in found if not suite or not f.suites or suite in f.suites), found[0] if found else None)

    def snapshots_work(self, qemu_release: tuple[int, ...]) -> bool:
        return self.snapshots_since is not None and qemu_release >= self.snapshots_since

    @property
    def no_snapshots(self) -> str:
        """Why its guests boot cold when the QEMU cannot restore them (a boot path's note)."""
        if self.snapshots_since is None:
            return f"no snapshots on {self.name}: its restores are unreliable"
        return f"no snapshots on {self.name} with QEMU < {'.'.join(map(str, self.snapshots_since))}"


_FROM_6_12 = ("bookworm-backports", "trixie", "trixie-backports", "forky")
_X86_64 = Arch(
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
)

ARCHES: tuple[Arch, ...] = (
    _X86_64,
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
    Arch(
        name="ppc64el",
        elf_machine="EM_PPC64",
        uname="ppc64le",
        aliases=("ppc64le", "powerpc64le", "ppc64"),
        debian="ppc64el",
        triplet="powerpc64le-linux-gnu",
        qemu_binary="qemu-system-ppc64",
        # x-vof: QEMU's Virtual Open Firmware (vof.bin) instead of SLOF: seconds less under TCG, enough for -kernel
        machine="pseries,x-vof=on",
        cpu="power9",
        kvm_cpu="host",
        console="hvc0",
        host_machines=("ppc64le",),
        qemu_packages=("qemu-system-ppc",),
        # Debian 6.1 (bookworm) has 64 KiB pages; from 6.12 on the default flavour has 4 KiB and -64k has 64 KiB
        flavours=(
            Flavour("4k", 4096, "powerpc64le", _FROM_6_12),
            Flavour("64k", 65536, "powerpc64le-64k", _FROM_6_12),
            Flavour("64k", 65536, "powerpc64le", ("bookworm",)),
        ),
        musl="powerpc64le",
        cpuinfo_keys=("cpu",),
        instead=(("trixie", "forky"),),  # trixie's ppc64el libc6, zlib1g and kernel .debs answer 404 on the mirror
        in_all=False,
    ),
    Arch(
        name="s390x",
        elf_machine="EM_S390",
        uname="s390x",
        aliases=("s390", "systemz"),
        debian="s390x",
        triplet="s390x-linux-gnu",
        qemu_binary="qemu-system-s390x",
        machine="s390-ccw-virtio",
        cpu="max",  # the kernel's facility list needs a recent CPU model (Debian builds for z10 and up)
        kvm_cpu="host",
        console="ttysclp0",
        host_machines=("s390x",),
        qemu_packages=("qemu-system-s390x", "qemu-system-misc"),  # QEMU >= 10 has an s390x package
        flavours=(Flavour("4k", 4096, "s390x"),),
        virtio="ccw",  # channel I/O: virtio-net-ccw, virtio-blk-ccw
        tcg_touch_faults=2,
        cpuinfo_keys=("processor 0",),
        kernel_magic=(0x10008, b"S390EP"),  # the s390 boot image's entry marker
        instead=(("trixie", "forky"),),  # trixie's s390x libc6, zlib1g and kernel .debs answer 404 on the mirror
        in_all=False,
    ),
    Arch(
        name="armhf",
        elf_machine="EM_ARM",
        uname="armv7l",
        aliases=("arm", "armv7", "armv7l"),
        debian="armhf",
        triplet="arm-linux-gnueabihf",
        qemu_binary="qemu-system-arm",
        machine="virt,highmem=off",  # highmem hangs 32-bit guests under TCG (QEMU issue 2585)
        cpu="cortex-a15",  # LPAE, which the armmp-lpae kernel needs
        kvm_cpu="host",
        console="ttyAMA0",
        host_machines=("armv7l",),
        qemu_packages=("qemu-system-arm",),
        flavours=(Flavour("4k", 4096, "armmp-lpae"),),
        musl="armhf",
        musl_target="arm-linux-musleabihf",
        cflags=("-march=armv7-a", "-mfpu=vfpv3-d16", "-mfloat-abi=hard"),  # Debian's armhf baseline
        bits=32,
        cpuinfo_keys=("Hardware",),
        kernel_magic=(0x24, b"\x18\x28\x6f\x01"),  # the zImage magic
        in_all=False,
    ),
    # Debian's i386 is a userland for amd64's kernel (it has no kernel from trixie on): x86_64's machine, QEMU and
    # kernels, with i386's libc and probes; `uname -m` in the guest is x86_64's
    replace(
        _X86_64,
        name="i386",
        elf_machine="EM_386",
        aliases=("i686", "x86"),
        debian="i386",
        triplet="i386-linux-gnu",
        musl="i386",
        cflags=("-march=i686",),  # Debian's i386 baseline
        bits=32,
        kernel_debian=_X86_64.debian,
        in_all=False,
    ),
    Arch(
        name="loong64",
        elf_machine="EM_LOONGARCH",
        uname="loongarch64",
        aliases=("loongarch64", "loongarch"),
        debian="loong64",
        triplet="loongarch64-linux-gnu",
        qemu_binary="qemu-system-loongarch64",
        machine="virt",
        cpu="la464",
        kvm_cpu="host",
        console="ttyS0",
        host_machines=("loongarch64",),
        # Restored loong64 guests of QEMU 11.1.3 sometimes never run again (of 4 fresh snapshots, 2 restored to a
        # silent console and no SSH; one that restored once restored 6 of 6): every loong64 guest boots cold
        snapshots_since=None,
        # Direct kernel boot without firmware dies in i8042_init (no ACPI tables): boot through UEFI, as QEMU's tests do
        bios="usr/share/qemu-efi-loongarch64/QEMU_EFI.fd",
        bios_package="qemu-efi-loongarch64",
        qemu_packages=("qemu-system-misc",),
        flavours=(Flavour("16k", 16384, "loong64"),),  # Debian's loong64 kernel has 16 KiB pages
        # Copy relocations of libc data (stdout, stderr) break Debian's loong64 glibc: a non-PIE reference to them
        # died at its first stdio call ("glibc detected an invalid stdio handle", SIGBUS); reach them via the GOT
        cflags=("-fno-direct-access-external-data",),
        cpuinfo_keys=("Model Name",),
        suites=("forky",),  # Debian ships loong64 from forky on
        instead=(("bookworm", "forky"), ("trixie", "forky")),
        kernel_magic=(4, b"zimg"),  # an EFI zboot image
        in_all=False,
    ),
)

# Canonical names first, then the first row with a uname, Debian name or alias (i386's uname is x86_64's name)
_BY_NAME: dict[str, Arch] = {a.name.lower(): a for a in ARCHES}
for _arch in ARCHES:
    for _key in (_arch.uname, _arch.debian, *_arch.aliases):
        _BY_NAME.setdefault(_key.lower(), _arch)


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
            f"use one of: {valid}, '{ALL}' ({', '.join(a.name for a in ARCHES if a.in_all)}) or '{EVERYTHING}' (aliases: "
            + ", ".join(sorted(k for k in _BY_NAME if k not in names()))
            + ")",
        ) from None


ALL = "all"  # the rows with in_all (x86_64, arm64, riscv64): what lab run runs by default
EVERYTHING = "everything"  # every row


def select(spec: str) -> list[Arch]:
    """Parse ``all``, ``everything`` or a comma-separated list (which may include either) into arches, in table
    order, without duplicates."""
    picked: set[str] = set()
    for part in (p.strip().lower() for p in spec.split(",")):
        if part in (ALL, EVERYTHING):
            picked |= {a.name for a in ARCHES if a.in_all or part == EVERYTHING}
        elif part:
            picked.add(get(part).name)
    if not picked:
        raise UserError("empty arch list", f"use '{ALL}', '{EVERYTHING}' or e.g. 'x86_64,arm64'")
    return [a for a in ARCHES if a.name in picked]


def host() -> Arch | None:
    """The row of this host's own CPU architecture (its Debian architecture and triplet), if lab knows it."""
    machine = platform.machine().lower()
    return next((a for a in ARCHES if machine in a.host_machines), None)


def host_can_kvm(arch: Arch, machine: str | None = None) -> bool:
    """Whether this host's CPU architecture matches ``arch`` (a precondition for KVM)."""
    return (machine or platform.machine()).lower() in arch.host_machines
