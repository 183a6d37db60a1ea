"""ELF facts the image builder checks: module metadata and shared-library closure."""

from __future__ import annotations

import io
import lzma
import os
from collections.abc import Collection, Iterable, Mapping
from typing import Protocol

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.segments import InterpSegment

from lab.errors import ImageError
from lab.guests.initramfs import Tree


class HasData(Protocol):
    @property
    def data(self) -> bytes: ...


def modinfo(ko: bytes) -> dict[str, list[str]]:
    """The ``.modinfo`` key=value strings of a kernel module."""
    elf = ELFFile(io.BytesIO(ko))
    section = elf.get_section_by_name(".modinfo")
    info: dict[str, list[str]] = {}
    if section is None:
        return info
    for item in section.data().split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


def module_name(path: str) -> str:
    """``kernel/fs/ext4/ext4.ko.xz`` → ``ext4``; dashes and underscores are the same to the kernel."""
    base = path.rsplit("/", 1)[-1]
    for suffix in (".xz", ".zst", ".gz"):
        base = base.removesuffix(suffix)
    return base.removesuffix(".ko").replace("-", "_")


def decompress_module(path: str, data: bytes) -> bytes:
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".ko"):
        return data
    raise ImageError(f"unsupported module compression: {path}", "teach lab.elf.decompress_module this format")


def module_load_order(wanted: Iterable[str], available: Mapping[str, HasData], builtin: Collection[str] = ()) -> list[str]:
    """Names of ``wanted`` modules and their dependencies, dependencies first.

    ``available`` maps module names to objects whose ``data`` is the uncompressed ``.ko``. Trixie kernels
    ship no modules.dep, so dependencies come from each module's ``depends=``. A wanted entry may name
    alternatives, ``a|b`` (the first the kernel has: crc32c_generic became crc32c_cryptoapi in 6.15), and end in
    ``?`` (optional); one the kernel has built in (``builtin``: its modules.builtin) is not loaded.
    """
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = name.replace("-", "_")
        if name in order:
            return
        if name in visiting:
            raise ImageError(f"module dependency cycle: {' -> '.join((*chain, name))}", "check the kernel package")
        if name not in available:
            via = f" (needed by {chain[-1]})" if chain else ""
            raise ImageError(
                f"kernel module {name!r} not found in the kernel package{via}",
                "it may be built in: remove it from kernel.modules in the recipe",
            )
        visiting.add(name)
        for dep in ",".join(modinfo(available[name].data).get("depends", [])).split(","):
            if dep:
                visit(dep, (*chain, name))
        visiting.discard(name)
        order.append(name)

    for entry in wanted:
        choices = [c.replace("-", "_") for c in entry.rstrip("?").split("|")]
        if any(c in builtin for c in choices):
            continue
        found = [c for c in choices if c in available]
        if found or not entry.endswith("?"):
            visit(found[0] if found else choices[0], ())
    return order


def _elf(data: bytes) -> ELFFile | None:
    if not data.startswith(b"\x7fELF"):
        return None
    try:
        return ELFFile(io.BytesIO(data))
    except ELFError:
        return None


def interpreter(elf: ELFFile) -> str | None:
    for seg in elf.iter_segments():
        if isinstance(seg, InterpSegment):
            return str(seg.get_interp_name())
    return None


def needed(elf: ELFFile) -> list[str]:
    for section in elf.iter_sections():
        if isinstance(section, DynamicSection):
            return [str(t.needed) for t in section.iter_tags() if t.entry.d_tag == "DT_NEEDED"]  # type: ignore[attr-defined]
    return []


def bind_now(elf: ELFFile) -> bool:
    """Whether the dynamic linker resolves every symbol at load (-z now) rather than lazily."""
    for section in elf.iter_sections():
        if isinstance(section, DynamicSection):
            for t in section.iter_tags():
                tag, val = t.entry.d_tag, t.entry.d_val
                if tag == "DT_BIND_NOW" or (tag == "DT_FLAGS" and val & 0x8) or (tag == "DT_FLAGS_1" and val & 0x1):
                    return True
    return False


def check_closure(tree: Tree, roots: Iterable[str], lib_dirs: Iterable[str]) -> list[str]:
    """Problems (empty if none) with the interpreters and DT_NEEDED libraries of ``roots``."""
    problems: list[str] = []
    dirs = tuple(lib_dirs)
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        path = todo.pop()
        real = tree.resolve(path)
        if real is None:
            problems.append(f"{path} is missing")
            continue
        if real in seen:
            continue
        seen.add(real)
        elf = _elf(tree.entries[real].data)
        if elf is None:
            continue
        interp = interpreter(elf)
        if interp and not tree.exists(interp):
            problems.append(f"{path}: interpreter {interp} is missing")
        for lib in needed(elf):
            hits = [f"{d}/{lib}" for d in dirs if tree.exists(f"{d}/{lib}")]
            if hits:
                todo.append(hits[0])
            else:
                problems.append(f"{path}: needs {lib}, which is in none of {', '.join(dirs)}")
    return sorted(set(problems))


def facts(path: str) -> dict[str, object]:
    """ELF facts of a built payload: type, interpreter, DT_NEEDED, segments, relocation counts, sizes."""
    with open(path, "rb") as f:
        e = ELFFile(f)
        segments: list[dict[str, int | str]] = []
        text = data = bss = 0
        for seg in e.iter_segments():
            h = seg.header
            flags = "".join(c for bit, c in ((4, "R"), (2, "W"), (1, "X")) if h.p_flags & bit)
            segments.append({"type": str(h.p_type), "flags": flags, "vaddr": h.p_vaddr, "filesz": h.p_filesz, "memsz": h.p_memsz})
            if h.p_type == "PT_LOAD":
                if "X" in flags:
                    text += h.p_filesz
                elif "W" in flags:
                    data += h.p_filesz
                    bss += h.p_memsz - h.p_filesz
        relocations = {str(s.name): s.num_relocations() for s in e.iter_sections() if isinstance(s, RelocationSection)}
        return {
            "machine": str(e.header.e_machine),
            "type": str(e.header.e_type),
            "pie": e.header.e_type == "ET_DYN",
            "interpreter": interpreter(e),
            "needed": needed(e),
            "bind_now": bind_now(e),
            "segments": segments,
            "relocations": relocations,
            "sizes": {"file": os.path.getsize(path), "text": text, "data": data, "bss": bss},
        }
