"""Kernel image formats: turning an x86 bzImage into the ELF vmlinux QEMU can boot via PVH.

Under TCG a bzImage spends about a second in real-mode setup and in
decompressing itself; QEMU boots the uncompressed ELF (which carries a PVH
entry note) directly, which measured ~1 s faster to SSH on this kind of host.
"""

from __future__ import annotations

import lzma
import struct
import subprocess
import zlib

from lab.errors import ImageError

_MAGICS = {b"\x28\xb5\x2f\xfd": "zstd", b"\xfd7zXZ\x00": "xz", b"\x1f\x8b": "gzip"}


def bzimage_payload(data: bytes) -> bytes:
    """The compressed kernel inside a bzImage, located via the setup header (boot protocol >= 2.08)."""
    if data[0x202:0x206] != b"HdrS":
        raise ImageError("kernel is not a bzImage (no HdrS setup header)", "set the arch's kernel_format to 'as-is'")
    setup_sects = data[0x1F1] or 4
    offset, length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + offset
    return data[start : start + length]


def decompress(payload: bytes) -> bytes:
    """Decompress a kernel payload; the kernel build appends a 4-byte size, which is dropped."""
    kind = next((name for magic, name in _MAGICS.items() if payload.startswith(magic)), None)
    if kind == "zstd":
        try:
            proc = subprocess.run(["zstd", "-dc"], input=payload[:-4], capture_output=True, check=False)
        except FileNotFoundError:
            raise ImageError(
                "zstd not found: it unpacks the x86_64 kernel for PVH boot", "apt-get install zstd (./setup.sh does)"
            ) from None
        if proc.returncode != 0:
            raise ImageError(f"zstd could not decompress the kernel: {proc.stderr.decode(errors='replace').strip()}", "install zstd")
        return proc.stdout
    if kind == "xz":
        return lzma.LZMADecompressor().decompress(payload)
    if kind == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
    raise ImageError(f"unknown kernel compression (magic {payload[:4].hex()})", "set the arch's kernel_format to 'as-is'")


def prepare(data: bytes, kernel_format: str) -> bytes:
    """The bytes to pass to QEMU's -kernel for an arch whose table row says ``kernel_format``."""
    if kernel_format == "as-is":
        return data
    if kernel_format == "pvh":
        vmlinux = decompress(bzimage_payload(data))
        if not vmlinux.startswith(b"\x7fELF"):
            raise ImageError("decompressed kernel is not an ELF vmlinux", "set the arch's kernel_format to 'as-is'")
        return vmlinux
    raise ValueError(f"unknown kernel_format {kernel_format!r}")
