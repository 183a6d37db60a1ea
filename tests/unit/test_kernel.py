import gzip
import lzma
import struct

import pytest

from lab.errors import ImageError
from lab.guests.kernel import prepare
from tests.unit.elfgen import elf_with_sections


def bzimage(payload: bytes, setup_sects: int = 3) -> bytes:
    head = bytearray((setup_sects + 1) * 512)
    head[0x1F1] = setup_sects
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<II", head, 0x248, 16, len(payload))
    return bytes(head) + b"\0" * 16 + payload + b"trailing"


VMLINUX = elf_with_sections({".text": b"\x90" * 1000})
SIZE = struct.pack("<I", len(VMLINUX))  # the kernel build appends the size


@pytest.mark.parametrize("compress", [lambda b: gzip.compress(b), lambda b: lzma.compress(b, format=lzma.FORMAT_XZ)])
def test_pvh_unpacks_bzimage_payload(compress) -> None:  # type: ignore[no-untyped-def]
    assert prepare(bzimage(compress(VMLINUX) + SIZE), "pvh") == VMLINUX


def test_as_is_and_errors() -> None:
    assert prepare(b"Image", "as-is") == b"Image"
    with pytest.raises(ImageError, match="not a bzImage"):
        prepare(b"\0" * 4096, "pvh")
    with pytest.raises(ImageError, match="unknown kernel compression"):
        prepare(bzimage(b"LZ4!data"), "pvh")


def test_pvh_with_zstd_payload() -> None:
    import subprocess

    zst = subprocess.run(["zstd", "-c", "-q"], input=VMLINUX, capture_output=True, check=True).stdout
    assert prepare(bzimage(zst + SIZE), "pvh") == VMLINUX


def test_a_missing_zstd_is_named_with_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (issue 10.8): a missing zstd was a FileNotFoundError traceback."""
    from lab.guests.kernel import decompress

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ImageError, match="zstd not found") as err:
        decompress(b"\x28\xb5\x2f\xfd" + b"\0" * 16)
    assert "apt-get install zstd" in err.value.remedy
