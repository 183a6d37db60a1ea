"""Real guests for every arch: machine, page size, THP, scratch disk, SFTP round trip, host-key pinning."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from lab import arches, axes, config
from lab.deadline import Deadline
from lab.guests.boot import boot
from lab.guests.images import Image
from lab.guests.keys import client_key, host_key
from lab.guests.protocol import SCRATCH_MOUNT, TEST_FILE
from lab.guests.recipes import load_recipe
from lab.guests.ssh import Guest, HostKeyRejected

ARCH_NAMES = [a.name for a in arches.ARCHES]


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


@pytest.mark.parametrize("arch_name", ARCH_NAMES)
def test_guest_is_real_and_reachable(arch_name: str, cfg: config.Config, images: dict[str, Image], tmp_path: Path) -> None:
    arch = arches.get(arch_name)
    with boot(cfg, images[arch_name]) as b:
        g = b.guest
        assert b.info.accel in ("kvm", "tcg")
        assert g.run("uname -m").stdout.strip() == arch.uname
        kib = images[arch_name].flavour.bytes // 1024  # the image's kernel flavour (lab.arches)
        assert g.run("awk '/KernelPageSize/ {print $2; exit}' /proc/self/smaps").stdout.strip() == str(kib)
        thp = g.run("cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo none").stdout
        # s390x's kernel under TCG has no THP (no EDAT-1): it never uses huge pages
        assert f"[{cfg.guest.transparent_hugepage}]" in thp or (thp.strip() == "none" and cfg.guest.transparent_hugepage == "never")
        mounts = g.run("cat /proc/mounts").stdout
        assert f"{axes.scratch_device(cfg.guest.scratch, arch.disk)} {SCRATCH_MOUNT} ext4 " in mounts  # guest.scratch's device
        assert g.run(f"basename $(readlink /sys/block/{arch.disk}/device/driver)").stdout.strip() == "virtio_blk"  # the image's disk
        size = g.run(f"stat -c %s {SCRATCH_MOUNT}/{TEST_FILE}").stdout.strip()
        assert int(size) == load_recipe(cfg.recipe).test_file_mib << 20

        payload = os.urandom(300_000)
        (tmp_path / "up.bin").write_bytes(payload)
        g.put(tmp_path / "up.bin", "/tmp/up.bin")
        assert g.run("sha256sum /tmp/up.bin").stdout.split()[0] == hashlib.sha256(payload).hexdigest()
        g.get("/tmp/up.bin", tmp_path / "down.bin")
        assert (tmp_path / "down.bin").read_bytes() == payload

        failing = g.run("sh -c 'echo oops >&2; exit 7'")
        assert failing.exited == 7 and failing.stderr.strip() == "oops"

        # The forward listens on loopback only.
        assert listening_addresses(b.info.port) == {"0100007F"}

        # A client pinning another host key refuses this guest.
        other = host_key(cfg.cache_dir / "keys", f"test-other-{arch_name}")
        impostor = Guest(arch_name, b.info.port, client_key(cfg.cache_dir / "keys"), other, 10)
        with pytest.raises(HostKeyRejected):
            impostor.connect(Deadline(20))
        pid = b.vm.pid
    assert pid is not None and not alive(pid)
    assert b.info.console_log.exists()
    if b.info.boot == "restored":  # a restored guest printed its ready marker in the boot that saved it
        assert b.info.console_log.name.endswith("-restored.log")
    else:
        assert "LAB-READY" in b.info.console_log.read_text(errors="replace")
