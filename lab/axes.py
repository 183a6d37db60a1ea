"""The measurement axes: the table of what a cell can vary besides arch, variant and buffer size.

Each axis value is part of a cell's identity (``Cell.axes``: every axis's value, in table order, e.g.
``suite=forky,kernel=trixie,...,tunables=``: absolute, never relative to a lab.yaml's defaults), so baselines
never compare across knob values and editing lab.yaml relabels nothing. Displays leave out the values equal to
the table's own default (:func:`shown`). ``boot`` axes need a guest of their own (another image or QEMU:
``lab.spec.GuestSpec``); ``run`` axes are applied to each probe run in the same guest. Adding an axis is
adding a row here and teaching the engine (run axes) or the guest spec (boot axes) what it means.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lab import arches
from lab.errors import UserError


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[str, ...]  # allowed values; () means free-form
    where: str  # boot | run
    help: str
    default: str  # the table's default: displays leave it out (a cell's identity never does)


@dataclass(frozen=True)
class Suite:
    """A Debian suite lab can build guests from (which arches it ships is each arch's row: ``Arch.suites``)."""

    name: str
    base: str = ""  # a backports suite: the suite it extends (its packages' dependencies come from there too)

    @property
    def debian(self) -> tuple[str, ...]:
        """The Debian architectures of lab's arches that it ships."""
        return tuple(a.debian for a in arches.ARCHES if self.name in a.suites)

    @property
    def guests(self) -> bool:
        """Whether lab builds guests from it (a backports suite only provides newer packages, e.g. QEMU)."""
        return not self.base


SUITES: tuple[Suite, ...] = (
    Suite("bookworm"),
    Suite("bookworm-backports", base="bookworm"),
    Suite("trixie"),
    Suite("trixie-backports", base="trixie"),
    Suite("forky"),
)


@dataclass(frozen=True)
class Scratch:
    """A block device the scratch file system can live on (guest.scratch, the ``scratch`` axis)."""

    name: str
    device: str  # what /scratch is mounted from in the guest ({disk}: the arch's scratch disk, lab.arches)
    cmdline: str  # what the kernel command line tells /init ("": nothing)
    at_init: bool  # mounted by /init, before any snapshot (guest memory), or by lab after every boot and restore
    help: str


SCRATCHES: tuple[Scratch, ...] = (
    Scratch(
        "ram", "/dev/ram0", "lab.scratch=ram", True,
        "a RAM disk (brd) in guest memory holding a copy of the scratch image: a major fault reads memory, not an emulated disk",
    ),
    Scratch(
        "disk", "/dev/{disk}", "", False,
        "the virtio disk itself: major faults go through QEMU's virtio-blk (for timing real storage under KVM)",
    ),
)  # fmt: skip


def scratch(name: str) -> Scratch:
    return next(s for s in SCRATCHES if s.name == name)


def scratch_device(name: str, disk: str) -> str:
    """The device /scratch is mounted from for scratch ``name`` on an arch whose scratch disk is ``disk``."""
    return scratch(name).device.format(disk=disk)


QEMU_HOST = "host"  # qemu.from / the qemu axis: the host's own qemu-system-* (else a suite's, lab.guests.qemu_store)
# The default qemu.from: QEMU 11.1 (>= 10.2 has the riscv64 timer-migration fix) on Debian stable's libraries; a
# backports suite moves far less often than testing (forky), and every move is a new qemu_version for baselines.
DEFAULT_QEMU = "trixie-backports"

KERNEL_FILE = "file-"  # a kernel axis value of a user's own kernel file: file-<its SHA256's first 12 digits>
PAGESIZES = ("4k", "16k", "64k")  # the pagesize axis (lab.arches.Flavour: which arch and suite has which)

AXES: tuple[Axis, ...] = (
    Axis(
        "suite",
        tuple(s.name for s in SUITES if s.guests),
        "boot",
        "the Debian suite of the guest's userland and libc (the kernel stays the recipe's: see kernel)",
        "trixie",
    ),
    Axis("kernel", tuple(s.name for s in SUITES), "boot",
         "the Debian suite whose kernel the guest boots (the userland stays the suite's), or file-DIGEST: --kernel FILE", "trixie"),
    Axis("pagesize", PAGESIZES, "boot", "the kernel's page size: the arch's kernel flavour with it (e.g. arm64's 16k)", "4k"),
    Axis("qemu", (QEMU_HOST, *(s.name for s in SUITES)), "boot", "the emulator: the host's QEMU or a suite's (qemu.from)",
         DEFAULT_QEMU),
    Axis("scratch", tuple(s.name for s in SCRATCHES), "boot", "the block device under the test file (guest.scratch): ram or disk",
         "ram"),
    Axis("thp", ("never", "madvise", "always"), "run", "transparent huge pages, set in the guest before each run", "never"),
    Axis("cache", ("cold", "warm"), "run", "the test file's page-cache state for the file stages: evicted, or read in first", "cold"),
    Axis("order", ("random", "seq"), "run", "the order file_read visits the test file's pages", "random"),
    Axis("tunables", (), "run", "GLIBC_TUNABLES for the probe, e.g. glibc.malloc.mmap_threshold=65536", ""),
)  # fmt: skip
Point = Mapping[str, str]  # axis name -> value, for every axis


def get(name: str) -> Axis:
    for a in AXES:
        if a.name == name:
            return a
    raise UserError(f"unknown axis {name!r}", "axes: " + ", ".join(a.name for a in AXES))


def suite(name: str, guests: bool = True) -> Suite:
    """A suite's row; ``guests``: one lab builds guests from (not a backports suite)."""
    for s in SUITES:
        if s.name == name and (s.guests or not guests):
            return s
    raise UserError(f"unknown suite {name!r}", "suites: " + ", ".join(s.name for s in SUITES if s.guests or not guests))


def check(name: str, value: str) -> str:
    axis = get(name)
    if axis.values and value not in axis.values:
        raise UserError(f"axis {name}: {value!r} is not valid", "values: " + ", ".join(axis.values))
    forbidden = ", \n\t'\"" + ("" if name == "tunables" else "=")
    if any(c in value for c in forbidden):
        raise UserError(
            f"axis {name}: {value!r} is not valid",
            "a value may not contain spaces, quotes or ','" + ("" if name == "tunables" else " or '='"),
        )
    return value


def parse(specs: list[str] | tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """``["thp=never,always", "cache=warm"]`` -> {"thp": ("never", "always"), "cache": ("warm",)}; errors name the spec.

    ``tunables`` takes one value per ``--axis`` (a GLIBC_TUNABLES string has ``=`` and ``:`` in it); repeat the
    option for several, e.g. ``--axis tunables=glibc.malloc.mmap_threshold=65536 --axis tunables=``.
    """
    out: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or (not values and name.strip() != "tunables"):
            raise UserError(f"--axis {spec!r} is not valid", "use NAME=VALUE[,VALUE...], e.g. --axis thp=never,always")
        name = name.strip()
        get(name)
        parts = (values,) if name == "tunables" else tuple(v for v in values.split(",") if v)
        if not parts and name != "tunables":
            raise UserError(f"--axis {spec!r} names no value", "e.g. --axis thp=never,always")
        out[name] = tuple(dict.fromkeys((*out.get(name, ()), *(check(name, v.strip()) for v in parts))))
    return out


def identity(point: Point) -> str:
    """A cell's axes as part of its identity: every axis's value, in table order (absolute: no default left out)."""
    return ",".join(f"{a.name}={point[a.name]}" for a in AXES)


def values(ident: str) -> dict[str, str]:
    """An identity (or a part of one: an older, relative one) back into {axis: value}; unknown names are kept."""
    return dict(part.partition("=")[::2] for part in ident.split(",") if part)


def explicit(ident: str, recorded: Point) -> str:
    """An older identity (only the values that differed from that lab.yaml's defaults) made absolute: the values
    it names, else what the cell recorded (``recorded``: e.g. its THP mode, page size, QEMU, scratch device), else
    the table's default (what lab measured before the axis existed)."""
    named = values(ident)
    return identity({a.name: named.get(a.name, recorded.get(a.name, a.default)) for a in AXES})


def pagesize_of(page_bytes: int) -> str:
    """A page size in bytes as the pagesize axis's value (4096 -> 4k)."""
    return f"{page_bytes // 1024}k"


def shown(ident: str) -> str:
    """An identity for display: the values that are not the table's default (``""``: all are)."""
    named = values(ident)
    default = {a.name: a.default for a in AXES}
    return ",".join(f"{k}={v}" for k, v in named.items() if default.get(k) != v)
