from pathlib import Path

import pytest

from lab.arches import get
from lab.guests.qemu import VMSpec, kernel_cmdline, qemu_argv

IMG = Path("/cache/img")
TAIL = ["-serial", "file:/run/console.log", "-netdev", "user,id=net0,ipv6=off,hostfwd=tcp:127.0.0.1:2222-:22"]
TAIL += ["-device", "virtio-net-pci,netdev=net0,romfile="]
TAIL += ["-drive", "file=/cache/img/scratch.ext4,format=raw,if=none,id=scratch,snapshot=on", "-device", "virtio-blk-pci,drive=scratch"]


def spec(arch: str, accel: str = "tcg", **kw: object) -> VMSpec:
    base: dict[str, object] = dict(
        arch=get(arch),
        kernel=IMG / "kernel",
        initrd=IMG / "initrd.cpio",
        scratch=IMG / "scratch.ext4",
        append="console=X",
        memory_mib=512,
        cpus=1,
        accel=accel,
        ssh_port=2222,
        console_log=Path("/run/console.log"),
    )
    base.update(kw)
    return VMSpec(**base)  # type: ignore[arg-type]


def boot(*extra: str) -> list[str]:
    return [*extra, "-kernel", "/cache/img/kernel", "-initrd", "/cache/img/initrd.cpio", "-append", "console=X"]


COMMON = ["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]


def test_x86_64_tcg() -> None:
    assert qemu_argv(spec("x86_64")) == [
        "qemu-system-x86_64", *COMMON,
        "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "512M",
        *boot(), *TAIL,
    ]  # fmt: skip


def test_x86_64_kvm_uses_host_cpu() -> None:
    assert qemu_argv(spec("x86_64", "kvm"))[6:16] == ["-machine", "q35", "-accel", "kvm", "-cpu", "host", "-smp", "1", "-m", "512M"]


def test_arm64_tcg() -> None:
    assert qemu_argv(spec("arm64", cpus=2, memory_mib=1024)) == [
        "qemu-system-aarch64", *COMMON,
        "-machine", "virt", "-accel", "tcg", "-cpu", "max,pauth-impdef=on", "-smp", "2", "-m", "1024M",
        *boot(), *TAIL,
    ]  # fmt: skip


def test_riscv64_tcg_has_opensbi_and_tb_size() -> None:
    assert qemu_argv(spec("riscv64", tb_size_mib=128)) == [
        "qemu-system-riscv64", *COMMON,
        "-machine", "virt", "-accel", "tcg,tb-size=128", "-cpu", "rv64", "-smp", "1", "-m", "512M",
        *boot("-bios", "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin"), *TAIL,
    ]  # fmt: skip


def test_no_scratch_disk_and_commas_in_paths() -> None:
    argv = qemu_argv(spec("arm64", scratch=None))
    assert "-drive" not in argv and "virtio-blk-pci,drive=scratch" not in argv
    argv = qemu_argv(spec("arm64", scratch=Path("/a,b/s.ext4")))
    assert "file=/a,,b/s.ext4,format=raw,if=none,id=scratch,snapshot=on" in argv


def test_port_forward_binds_loopback_only() -> None:
    for arch in ("x86_64", "arm64", "riscv64"):
        netdev = [a for a in qemu_argv(spec(arch)) if a.startswith("user,")]
        assert netdev == ["user,id=net0,ipv6=off,hostfwd=tcp:127.0.0.1:2222-:22"]


def test_unknown_accel_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        qemu_argv(spec("x86_64", "hvf"))


def test_kernel_cmdline() -> None:
    assert kernel_cmdline(get("arm64"), "never", ("quiet", "norandmaps"), "disk") == (
        "console=ttyAMA0 rdinit=/init transparent_hugepage=never quiet norandmaps"
    )
    # /init reads where the scratch file system lives from the command line (so it is in every snapshot's key)
    assert kernel_cmdline(get("arm64"), "never", (), "ram") == "console=ttyAMA0 rdinit=/init transparent_hugepage=never lab.scratch=ram"
