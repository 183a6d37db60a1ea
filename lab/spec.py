"""A guest as a value: everything one guest is made of, built by the plan and passed whole to what makes it.

:class:`GuestSpec` is the arch plus every boot axis's value (lab.axes: userland suite, kernel, page size, QEMU
origin, scratch device), and a user's own kernel file when the kernel axis names one. Images, boot, snapshots,
tracing, the fleet and the run directory take the spec; a cell's identity is its boot point plus its run point.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from lab import axes
from lab.arches import Arch, Flavour
from lab.errors import UserError


@dataclass(frozen=True)
class KernelFile:
    """A user's own kernel (``--kernel FILE [--modules DIR|DEB]``, guest.kernel in lab.yaml)."""

    path: Path
    modules: Path | None  # a modules directory (lib/modules/<release>/ or a tree holding it) or a .deb
    digest: str  # the kernel file's SHA256
    release: str  # what it says it is (its banner, else its modules')

    @property
    def value(self) -> str:
        """Its kernel axis value."""
        return f"{axes.KERNEL_FILE}{self.digest[:12]}"


@dataclass(frozen=True)
class GuestSpec:
    arch: Arch
    suite: str  # the userland's and libc's Debian suite
    kernel: str  # the Debian suite whose kernel it boots, or a KernelFile's value
    pagesize: str  # the kernel flavour's page size (lab.arches.Flavour)
    qemu: str  # the QEMU's origin: host or a suite (lab.guests.emulator)
    scratch: str  # the scratch device (lab.axes.SCRATCHES)
    kernel_file: KernelFile | None = None

    @property
    def flavour(self) -> Flavour:
        f = self.arch.flavour(self.pagesize, "" if self.kernel_file else self.kernel)
        if f is None:
            raise UserError(f"{self.arch.name} has no {self.pagesize} kernel flavour", "page sizes: " + pagesizes(self.arch))
        return f

    def boot(self) -> dict[str, str]:
        """Its boot axes' values (lab.axes), in table order."""
        return {a.name: getattr(self, a.name) for a in axes.AXES if a.where == "boot"}

    def problem(self) -> str:
        """Why Debian cannot make this guest ("" when it can): a suite without the arch, a kernel flavour the
        kernel's suite lacks."""
        if self.arch.debian not in axes.suite(self.suite).debian:
            return f"Debian {self.suite} does not ship {self.arch.name}"
        if self.kernel_file is not None:
            return ""
        if self.arch.kernel_arch not in axes.suite(self.kernel, guests=False).debian:
            return f"Debian {self.kernel} has no {self.arch.name} kernel"
        f = self.arch.flavour(self.pagesize, self.kernel)
        if f is None:
            return f"{self.arch.name} has no {self.pagesize} kernel ({pagesizes(self.arch)})"
        if f.suites and self.kernel not in f.suites:
            return f"Debian {self.kernel} has no {self.arch.name} {self.pagesize} kernel (linux-image-{f.kernel})"
        return ""


def pagesizes(arch: Arch) -> str:
    return ", ".join(f.pagesize for f in arch.flavours) or "none"


def make(arch: Arch, boot: Mapping[str, str], kernel_file: KernelFile | None = None, given: Collection[str] = ()) -> GuestSpec:
    """The spec of ``arch``'s guest at a boot point (every boot axis named). The page size, suite and kernel axes the run
    does not give (``given``: those it does) follow the arch's row: its default flavour's page size (loong64's is
    16k), and its suites in place of those it lacks or the mirror does (``Arch.instead``)."""
    file = kernel_file if kernel_file is not None and boot["kernel"] == kernel_file.value else None
    pagesize = boot["pagesize"] if "pagesize" in given else arch.flavours[0].pagesize
    suite = boot["suite"] if "suite" in given else arch.instead_of(boot["suite"])
    kernel = boot["kernel"] if "kernel" in given or file else arch.instead_of(boot["kernel"])
    return GuestSpec(arch, suite, kernel, pagesize, boot["qemu"], boot["scratch"], file)
