import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.errors import ImageError
from lab.guests import elf
from lab.guests.initramfs import Tree
from tests.unit.elfgen import module


@dataclass
class Mod:
    data: bytes


def modules(**deps: str) -> dict[str, Mod]:
    return {name: Mod(module(name, dep)) for name, dep in deps.items()}


def test_modinfo_reads_key_values() -> None:
    info = elf.modinfo(module("virtio_net", "net_failover"))
    assert info["depends"] == ["net_failover"] and info["name"] == ["virtio_net"]


def test_load_order_puts_dependencies_first_once() -> None:
    avail = modules(
        virtio_net="net_failover", net_failover="failover", failover="", ext4="jbd2,mbcache,crc16", jbd2="", mbcache="", crc16=""
    )
    order = elf.module_load_order(["virtio_net", "ext4", "failover"], avail)
    assert order == ["failover", "net_failover", "virtio_net", "jbd2", "mbcache", "crc16", "ext4"]


def test_missing_module_names_who_needs_it() -> None:
    with pytest.raises(ImageError, match=r"'net_failover' not found in the kernel package \(needed by virtio_net\)"):
        elf.module_load_order(["virtio_net"], modules(virtio_net="net_failover"))


def test_cycles_are_reported() -> None:
    with pytest.raises(ImageError, match="cycle: a -> b -> a"):
        elf.module_load_order(["a"], modules(a="b", b="a"))


@pytest.mark.parametrize(("path", "name"), [("kernel/fs/ext4/ext4.ko.xz", "ext4"), ("x/crc32c-intel.ko", "crc32c_intel")])
def test_module_name(path: str, name: str) -> None:
    assert elf.module_name(path) == name


@pytest.fixture(scope="module")
def host_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("a C compiler is required (./setup.sh installs gcc)")
    d = tmp_path_factory.mktemp("cc")
    (d / "p.c").write_text('#include <math.h>\n#include <stdio.h>\nint main(int c, char **v) { printf("%f", sqrt(c)); return 0; }\n')
    subprocess.run([cc, "-O1", "-o", str(d / "p"), str(d / "p.c"), "-lm"], check=True)
    return d / "p"


def test_closure_of_a_real_binary(host_binary: Path) -> None:
    from elftools.elf.elffile import ELFFile

    with open(host_binary, "rb") as f:
        e = ELFFile(f)
        interp, needed = elf.interpreter(e), elf.needed(e)
    assert interp and "libc.so.6" in needed and "libm.so.6" in needed
    t = Tree()
    t.file("usr/bin/p", host_binary.read_bytes(), 0o755)
    t.file(interp, b"loader")
    for lib in needed:
        t.file(f"usr/lib/x86_64-linux-gnu/{lib}", b"not an elf")
    assert elf.check_closure(t, ["usr/bin/p"], ["usr/lib/x86_64-linux-gnu"]) == []
    del t.entries["usr/lib/x86_64-linux-gnu/libm.so.6"]
    del t.entries[interp.strip("/")]
    problems = elf.check_closure(t, ["usr/bin/p", "usr/bin/absent"], ["usr/lib/x86_64-linux-gnu"])
    assert problems == sorted(
        [
            f"usr/bin/p: interpreter {interp} is missing",
            "usr/bin/p: needs libm.so.6, which is in none of usr/lib/x86_64-linux-gnu",
            "usr/bin/absent is missing",
        ]
    )
