"""Build minimal ELF64 relocatable files with chosen sections, for module-metadata tests."""

import struct


def elf_with_sections(sections: dict[str, bytes]) -> bytes:
    names = ["", *sections, ".shstrtab"]
    shstrtab = b"\0".join(n.encode() for n in names) + b"\0"
    offsets, off = {}, 0
    for n in names:
        offsets[n] = off
        off += len(n) + 1
    body = b""
    data_off: list[tuple[int, int]] = []
    for payload in [*sections.values(), shstrtab]:
        data_off.append((64 + len(body), len(payload)))
        body += payload
    shoff = 64 + len(body)
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    header += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, len(names), len(names) - 1)
    shdrs = b"\0" * 64
    for i, name in enumerate(names[1:]):
        off_i, size = data_off[i]
        sh_type = 3 if name == ".shstrtab" else 1
        shdrs += struct.pack("<IIQQQQIIQQ", offsets[name], sh_type, 0, 0, off_i, size, 0, 0, 1, 0)
    return header + body + shdrs


def module(name: str, depends: str = "") -> bytes:
    info = f"license=GPL\0name={name}\0depends={depends}\0".encode()
    return elf_with_sections({".modinfo": info, ".text": b"\x90" * 4})
