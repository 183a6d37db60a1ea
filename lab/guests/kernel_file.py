"""A guest's kernel as parts: its boot image, release and modules, from Debian packages or a user's own files.

Debian's kernel package holds ``boot/vmlinu*`` and its modules; from 7.x on ``linux-image-<rel>`` is a small
package depending on ``linux-binary-<rel>`` (the image at ``usr/lib/modules/<rel>/vmlinu[zx]``) and
``linux-modules-<rel>``: :func:`from_debs` reads whichever it is given. A user's own kernel (``--kernel FILE
[--modules DIR|DEB]``, the way tuxrun takes one) is checked whole before anything is built: its format is its
arch's (the row's ``kernel_magic``, or an ELF of its machine), its release is the modules', and every module the
image loads is there or built in (:func:`kernel_file`).
"""

from __future__ import annotations

import contextlib
import gzip
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.enums import ENUM_E_MACHINE

from lab import arches
from lab.arches import Arch
from lab.errors import ImageError, UserError
from lab.files import sha256_file
from lab.guests import elf, kernel
from lab.guests.initramfs import deb_tar
from lab.spec import KernelFile

_MODULES_DIR = re.compile(r"^(?:usr/)?lib/modules/([^/]+)/")
_VERSION = re.compile(rb"Linux version (\S+) \(")


@dataclass
class Parts:
    """A kernel's boot image (as shipped), release, modules (name -> (path, compressed bytes)) and built-ins."""

    image: bytes = b""
    release: str = ""
    modules: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    builtin: set[str] = field(default_factory=set)

    def add(self, name: str, data: bytes) -> None:
        """One file of a kernel package or modules tree, by its path inside it."""
        match = _MODULES_DIR.match(name)
        if name.startswith("boot/vmlinu") or (match and name in (match.group(0) + "vmlinuz", match.group(0) + "vmlinux")):
            self.image = data
            self.release = match.group(1) if match else name.split("-", 1)[1]
        elif match and "/kernel/" in name and ".ko" in name:
            self.modules[elf.module_name(name)] = (name, data)
            self.release = self.release or match.group(1)
        elif match and name.endswith("/modules.builtin"):
            self.builtin |= {elf.module_name(line) for line in data.decode(errors="replace").split()}


def from_debs(debs: list[Path]) -> Parts:
    """The kernel in Debian packages (the linux-image package, or linux-binary plus linux-modules)."""
    parts = Parts()
    for deb in debs:
        with deb_tar(deb) as tar:
            for member in tar:
                f = tar.extractfile(member) if member.isfile() else None
                if f is not None:
                    parts.add(member.name.removeprefix("./"), f.read())
    if not parts.image:
        raise ImageError(f"{', '.join(d.name for d in debs)}: no kernel image (boot/vmlinu* or usr/lib/modules/*/vmlinuz)",
                         "check kernel.package in the recipe")  # fmt: skip
    return parts


def _modules(path: Path) -> Parts:
    parts = Parts()
    if path.is_file() and path.suffix == ".deb":
        with deb_tar(path) as tar:
            for member in tar:
                f = tar.extractfile(member) if member.isfile() else None
                if f is not None and _MODULES_DIR.match(member.name.removeprefix("./")):
                    parts.add(member.name.removeprefix("./"), f.read())
        return parts
    if not path.is_dir():
        raise UserError(f"--modules {path}: not a directory or a .deb", "give lib/modules/RELEASE, a tree holding it, or a .deb")
    tops = [path] if (path / "kernel").is_dir() or (path / "modules.builtin").is_file() else []
    tops += sorted(p for base in ("lib/modules", "usr/lib/modules") for p in (path / base).glob("*") if p.is_dir())
    for top in tops[:1]:
        for file in sorted(top.rglob("*")):
            if file.is_file() and (".ko" in file.name or file.name == "modules.builtin"):
                parts.add(f"lib/modules/{top.name}/{file.relative_to(top)}", file.read_bytes())
    return parts


def machine_of(data: bytes) -> Arch | None:
    """The arch whose kernel this is: an ELF of its machine, or its boot image's magic (lab.arches)."""
    if data.startswith(b"\x7fELF") and len(data) > 20:
        (number,) = struct.unpack_from("<H" if data[5] == 1 else ">H", data, 18)
        name = next((k for k, v in ENUM_E_MACHINE.items() if v == number), "")
        return next((a for a in arches.ARCHES if a.elf_machine == name), None)
    return next((a for a in arches.ARCHES if a.kernel_magic[1] and data[a.kernel_magic[0] :].startswith(a.kernel_magic[1])), None)


def release_of(data: bytes) -> str | None:
    """The release a kernel image says it is (its ``Linux version`` banner; inside a bzImage's or gzip's payload)."""
    candidates = [data]
    if data[0x202:0x206] == b"HdrS":
        with contextlib.suppress(ImageError, ValueError, EOFError):
            candidates.append(kernel.decompress(kernel.bzimage_payload(data)))
    elif data.startswith(b"\x1f\x8b"):
        with contextlib.suppress(OSError, EOFError):
            candidates.append(gzip.decompress(data))
    for blob in candidates:
        if m := _VERSION.search(blob):
            return m.group(1).decode(errors="replace")
    return None


def kernel_file(arch: Arch, path: Path, modules: Path | None, needed: tuple[str, ...]) -> KernelFile:
    """A user's kernel for ``arch``, refused (UserError: one line, before anything is built) when it is not a
    kernel, is another arch's, or its modules are another release's or lack one the image loads (``needed``:
    entries as the recipe's ``kernel.modules``)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"--kernel {path}: cannot read it ({exc.strerror})", "give a vmlinux, Image or bzImage file") from None
    owner = machine_of(data)
    if owner is None:
        raise UserError(f"--kernel {path}: not a kernel image lab knows", f"give {arch.name}'s vmlinux (ELF) or boot image")
    if owner.kernel_arch != arch.kernel_arch:  # i386 guests boot amd64's kernels
        raise UserError(f"--kernel {path}: a kernel for {owner.name}, not {arch.name}", f"run it with --arch {owner.name}")
    release = release_of(data)
    if modules is None:
        raise UserError(f"--kernel {path}: no --modules", "give its modules (lib/modules/RELEASE, a tree holding it, or a .deb)")
    parts = _modules(modules)
    if not parts.release:
        raise UserError(f"--modules {modules}: holds no lib/modules/RELEASE/ tree", "give the kernel build's modules_install output")
    if release and parts.release != release:
        raise UserError(f"--modules {modules}: release {parts.release}, but the kernel is {release}", "give the modules of that build")
    for entry in needed:
        choices = [c.replace("-", "_") for c in entry.rstrip("?").split("|")]
        if not entry.endswith("?") and not any(c in parts.modules or c in parts.builtin for c in choices):
            raise UserError(f"--modules {modules}: no {' or '.join(choices)} (neither a module nor built in)",
                            "build the kernel with it (=m or =y): the guest needs it to boot")  # fmt: skip
    return KernelFile(path.resolve(), modules.resolve(), sha256_file(path), release or parts.release)


def user_parts(k: KernelFile) -> Parts:
    """The parts of a checked user kernel (its image, and its modules' tree)."""
    parts = _modules(k.modules) if k.modules else Parts()
    parts.image, parts.release = k.path.read_bytes(), k.release
    return parts
