"""ELF objects as the fault attribution needs them: where they load, their sections, their functions, their facts.

An :class:`ElfObject` is read once from the bytes of a file (the guest image's
own copy, or the binary lab uploaded), optionally with a detached debug file
whose symbol table names the functions the stripped file does not. Addresses
here are the object's own virtual addresses; :func:`load_bias` turns a mapping
of the file in a process into the offset to add.
"""

from __future__ import annotations

import bisect
import io
from dataclasses import dataclass, field

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import NoteSection, SymbolTableSection


@dataclass(frozen=True)
class Segment:
    vaddr: int
    memsz: int
    offset: int
    filesz: int
    flags: str  # RWX


@dataclass(frozen=True)
class Section:
    name: str
    start: int
    end: int


@dataclass(frozen=True)
class Facts:
    """What explains an object's start-up cost: relocations to apply, segments to map, RELRO to protect."""

    relocations: int  # entries in every relocation section the loader (or a static start-up) applies
    relocations_by_section: dict[str, int]
    load_segments: int
    relro_bytes: int
    bss_bytes: int
    data_bytes: int  # file-backed bytes of writable segments

    def as_dict(self) -> dict[str, object]:
        return {
            "relocations": self.relocations,
            "relocations_by_section": dict(self.relocations_by_section),
            "load_segments": self.load_segments,
            "relro_bytes": self.relro_bytes,
            "bss_bytes": self.bss_bytes,
            "data_bytes": self.data_bytes,
        }


@dataclass(frozen=True)
class ElfObject:
    path: str
    machine: str
    build_id: str | None
    segments: tuple[Segment, ...]
    sections: tuple[Section, ...]  # allocated sections, by start
    facts: Facts
    symbol_source: str  # symtab | dynsym | debug file | none
    interpreter: str | None = None  # PT_INTERP
    _starts: tuple[int, ...] = field(default=(), repr=False)
    _symbols: tuple[tuple[int, int, str], ...] = field(default=(), repr=False)  # (start, end, name) by start

    def section_at(self, vaddr: int) -> str:
        """The section holding ``vaddr``; between sections (alignment, the kernel zeroing a page's tail, the
        ELF and program headers at a segment's start), the neighbours that bound the gap."""
        best = None
        for s in self.sections:
            if s.start <= vaddr < s.end:
                best = s.name  # the last (innermost) match wins for nested sections like .tdata in .data
        if best is not None:
            return best
        before = max((s for s in self.sections if s.end <= vaddr), key=lambda s: s.end, default=None)
        after = min((s for s in self.sections if s.start > vaddr), key=lambda s: s.start, default=None)
        if before is None:
            return "(ELF headers)"
        return f"(between {before.name} and {after.name})" if after else f"(after {before.name})"

    def function_at(self, vaddr: int) -> str | None:
        i = bisect.bisect_right(self._starts, vaddr) - 1
        if i >= 0:
            start, end, name = self._symbols[i]
            if start <= vaddr < end:
                return name
        return None

    def covers(self, vaddr: int) -> bool:
        return any(s.vaddr <= vaddr < s.vaddr + s.memsz for s in self.segments)


def is_elf(data: bytes) -> bool:
    return data.startswith(b"\x7fELF")


def _functions(elf: ELFFile) -> dict[str, list[tuple[int, int, str]]]:
    """Per symbol table: (start, end, name) of its functions, and of untyped code labels such as ``_start``
    (a label without a size reaches to the next symbol)."""
    code = {i for i, s in enumerate(elf.iter_sections()) if s["sh_flags"] & 0x4}
    found: dict[str, list[tuple[int, int, str]]] = {}
    for sec in elf.iter_sections():
        if isinstance(sec, SymbolTableSection) and sec.name in (".symtab", ".dynsym"):
            rows = []
            for sym in sec.iter_symbols():
                kind, shndx = sym["st_info"]["type"], sym["st_shndx"]
                untyped_code = kind == "STT_NOTYPE" and isinstance(shndx, int) and shndx in code and not sym.name.startswith("$")
                if (kind in ("STT_FUNC", "STT_GNU_IFUNC") or untyped_code) and sym["st_value"] and sym.name:
                    rows.append((int(sym["st_value"]), int(sym["st_size"]), str(sym.name)))
            rows.sort()
            found[str(sec.name)] = [
                (start, start + size if size else (rows[i + 1][0] if i + 1 < len(rows) else start + 1), name)
                for i, (start, size, name) in enumerate(rows)
            ]
    return found


def build_id(elf: ELFFile) -> str | None:
    for sec in elf.iter_sections():
        if isinstance(sec, NoteSection):
            for note in sec.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID":
                    return str(note["n_desc"])
    return None


def debug_build_id(data: bytes) -> str | None:
    try:
        return build_id(ELFFile(io.BytesIO(data)))
    except ELFError:
        return None


def load(path: str, data: bytes, debug: bytes | None = None) -> ElfObject:
    """Read an object; ``debug`` is its detached debug file (same build ID), whose .symtab names more functions."""
    elf = ELFFile(io.BytesIO(data))
    segments, relro, interp = [], 0, None
    for seg in elf.iter_segments():
        h = seg.header
        if h.p_type == "PT_INTERP":
            interp = data[h.p_offset : h.p_offset + h.p_filesz].rstrip(b"\0").decode(errors="replace")
        elif h.p_type == "PT_LOAD":
            flags = "".join(c for bit, c in ((4, "R"), (2, "W"), (1, "X")) if h.p_flags & bit)
            segments.append(Segment(h.p_vaddr, h.p_memsz, h.p_offset, h.p_filesz, flags))
        elif h.p_type == "PT_GNU_RELRO":
            relro = h.p_memsz
    sections = sorted(
        (
            Section(str(s.name), s["sh_addr"], s["sh_addr"] + s["sh_size"])
            for s in elf.iter_sections()
            if s["sh_flags"] & 0x2 and s["sh_size"]
        ),
        key=lambda s: (s.start, -s.end),
    )
    relocs = {str(s.name): s.num_relocations() for s in elf.iter_sections() if isinstance(s, RelocationSection) and s["sh_flags"] & 0x2}
    facts = Facts(
        relocations=sum(relocs.values()),
        relocations_by_section=relocs,
        load_segments=len(segments),
        relro_bytes=relro,
        bss_bytes=sum(s.memsz - s.filesz for s in segments if "W" in s.flags),
        data_bytes=sum(s.filesz for s in segments if "W" in s.flags),
    )
    tables = _functions(elf)
    source, rows = "none", []
    if debug is not None:
        debug_rows = _functions(ELFFile(io.BytesIO(debug))).get(".symtab", [])
        if debug_rows:
            source, rows = "debug file", debug_rows
    if not rows and tables.get(".symtab"):
        source, rows = "symtab", tables[".symtab"]
    if not rows and tables.get(".dynsym"):
        source, rows = "dynsym", tables[".dynsym"]
    rows = sorted(set(rows))
    return ElfObject(
        path=path,
        machine=str(elf.header.e_machine),
        build_id=build_id(elf),
        segments=tuple(segments),
        sections=tuple(sections),
        facts=facts,
        symbol_source=source,
        interpreter=interp,
        _starts=tuple(r[0] for r in rows),
        _symbols=tuple(rows),
    )


def load_bias(obj: ElfObject, start: int, pgoff: int, page_size: int) -> int | None:
    """What to add to ``obj``'s addresses, given that its file offset ``pgoff`` is mapped at ``start``."""
    for seg in obj.segments:
        first = seg.offset - seg.offset % page_size
        if first <= pgoff < max(seg.offset + seg.filesz, first + 1):
            return start - (seg.vaddr - seg.offset + pgoff)
    return None
