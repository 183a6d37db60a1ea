"""Which QEMU runs a guest: the host's own ``qemu-system-*``, or lab's, unpacked from a Debian suite's packages.

An :class:`Emulator` is data: where its binaries, libraries, modules and
firmware are. Lab's own QEMU (``lab.guests.qemu_store`` builds it) runs through
its own dynamic loader with its own library path, ``QEMU_MODULE_DIR`` and
``-L`` data directories, so no library or firmware comes from the host. The
argv parts here are pure; :func:`version` runs the binary once per process.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from lab.arches import Arch
from lab.axes import QEMU_HOST


@dataclass(frozen=True)
class Emulator:
    """A QEMU build. ``root`` None: the host's (found in PATH); else a cache entry's unpacked tree, whose paths
    below are relative to it."""

    origin: str = QEMU_HOST  # "host" or the Debian suite it came from
    root: Path | None = None
    package_version: str = ""  # the Debian version of its qemu-system packages (a suite's QEMU)
    loader: str = ""  # its dynamic loader (the binaries' PT_INTERP, inside root)
    library_path: tuple[str, ...] = ()
    module_dir: str = ""
    data_dirs: tuple[str, ...] = ()  # its firmware search path (`-L help`), inside root

    def binary(self, arch: Arch) -> str:
        """The qemu-system binary's path (its name, for the host's: looked up in PATH)."""
        return arch.qemu_binary if self.root is None else str(self.root / "usr/bin" / arch.qemu_binary)

    def missing(self, arch: Arch) -> tuple[str, str] | None:
        """What this build lacks to run ``arch`` (its binary, its firmware) and the remedy; None: nothing."""
        if not shutil.which(self.binary(arch)):
            return f"{arch.qemu_binary} not found ({arch.name}'s QEMU)", (
                f"apt-get install {' or '.join(arch.qemu_packages)}, or qemu.from: a suite (lab.yaml) for lab's own QEMU"
            )
        bios = self.bios(arch)
        if bios and not Path(bios).is_file():
            return f"{bios} not found ({arch.name}'s firmware)", f"apt-get install {arch.bios_package}"
        return None

    def command(self, arch: Arch) -> list[str]:
        """The argv prefix that runs this build's ``qemu-system-*`` for ``arch``. Pure."""
        if self.root is None:
            return [arch.qemu_binary]
        libs = ":".join(str(self.root / d) for d in self.library_path)
        return [str(self.root / self.loader), "--library-path", libs, self.binary(arch)]

    def options(self) -> list[str]:
        """QEMU options naming its own data directories (firmware, option ROMs), searched before the built-in ones."""
        return [opt for d in self.data_dirs for opt in ("-L", str(self.root / d) if self.root else d)]

    def bios(self, arch: Arch) -> str | None:
        if arch.bios is None:
            return None
        return str((self.root or Path("/")) / arch.bios)

    def env(self) -> dict[str, str]:
        """Environment QEMU needs (its modules' directory); empty for the host's."""
        return {} if self.root is None else {"QEMU_MODULE_DIR": str(self.root / self.module_dir)}

    def describe(self) -> str:
        """Where it came from, as a cell records it: ``host`` or ``SUITE PACKAGE-VERSION``."""
        return self.origin if self.root is None else f"{self.origin} {self.package_version}"


HOST = Emulator()

_versions: dict[tuple[str, ...], str] = {}
_versions_lock = threading.Lock()


def version(emulator: Emulator, arch: Arch) -> str:
    """``qemu-system-* --version``'s first line (cached per process; "unknown" if it does not run)."""
    command = tuple(emulator.command(arch))
    with _versions_lock:
        if command in _versions:
            return _versions[command]
    try:
        out = subprocess.run(
            [*command, "--version"], capture_output=True, text=True, timeout=20, check=False, env={**os.environ, **emulator.env()}
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    found = out.splitlines()[0] if out else "unknown"
    with _versions_lock:
        _versions[command] = found
    return found


def release(version_line: str) -> tuple[int, ...]:
    """``QEMU emulator version 11.1.3 (Debian ...)`` -> (11, 1, 3); () when it names no version. Pure."""
    m = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", version_line)
    return tuple(int(g) for g in m.groups() if g is not None) if m else ()


def snapshots_work(emulator: Emulator, arch: Arch) -> bool:
    """Whether restored guests of ``arch`` work under this QEMU (a table fact: ``Arch.snapshots_since``)."""
    found = release(version(emulator, arch))
    return bool(found) and arch.snapshots_work(found)
