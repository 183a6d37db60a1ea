"""Snapshot restore's pure parts: QEMU argv with QMP and -incoming, the snapshot key, the post-boot command, config."""

from dataclasses import replace
from pathlib import Path

import pytest

from lab import axes, config
from lab.errors import UserError
from lab.guests import boot, emulator, qemu, snapshots
from lab.guests.emulator import HOST, Emulator
from lab.guests.protocol import THP_CONTROL
from lab.guests.snapshots import SnapshotStore
from tests.unit.test_qemu_argv import spec

REPO = Path(__file__).resolve().parents[2]


def test_argv_has_the_control_socket_and_restores_through_zstd() -> None:
    argv = qemu.qemu_argv(spec("arm64", qmp=Path("/run/q,1.sock"), incoming=Path("/cache/snap shots/state.zst")))
    assert argv[-4:] == ["-qmp", "unix:/run/q,,1.sock,server=on,wait=off", "-incoming", "exec:zstd -dc '/cache/snap shots/state.zst'"]


def test_key_ignores_per_boot_parts_and_follows_what_shapes_the_guest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulator, "_versions", {("qemu-system-aarch64",): "QEMU emulator version 7.2.22"})
    base = snapshots.key(spec("arm64"), "image-1")
    moved = spec(
        "arm64", ssh_port=4444, console_log=Path("/elsewhere/c.log"), kernel=Path("/other/kernel"), qmp=Path("/q"), tb_size_mib=256
    )
    assert snapshots.key(moved, "image-1") == base  # ports, paths, sockets and the TCG cache size do not shape the guest
    assert snapshots.key(spec("arm64", memory_mib=256), "image-1") != base
    assert snapshots.key(spec("arm64", append="console=Y"), "image-1") != base
    assert snapshots.key(spec("arm64"), "image-2") != base
    monkeypatch.setattr(emulator, "_versions", {("qemu-system-aarch64",): "QEMU emulator version 8.2.2"})
    assert snapshots.key(spec("arm64"), "image-1") != base  # another QEMU build: its snapshots are not valid
    own = Emulator("forky", Path("/c/qemu/e/root"), "1:11.1.2+ds-1", "usr/lib/ld.so", ("usr/lib",), "usr/lib/qemu", ("usr/share/qemu",))
    monkeypatch.setattr(emulator, "_versions", {tuple(own.command(spec("arm64").arch)): "QEMU emulator version 8.2.2"})
    assert snapshots.key(spec("arm64", emulator=own), "image-1") != snapshots.key(spec("arm64"), "image-1")  # another binary


def test_post_boot_sets_thp_mounts_the_scratch_disk_and_reseeds_a_restored_guest() -> None:
    cold = boot._post_boot(False, axes.scratch("disk"), "never").split(" && ")
    assert cold[0] == "if [ -e /sys/kernel/mm/transparent_hugepage/enabled ]; then echo never > /sys/kernel/mm/transparent_hugepage/enabled"
    assert cold[1].startswith("{ grep -qF '[never]' /sys/kernel/mm/transparent_hugepage/enabled || ")  # read back: applied, or an error
    assert cold[1].endswith("; fi")
    assert cold[2] == "mount -t ext4 -o noatime /dev/vda /scratch"
    restored = boot._post_boot(True, axes.scratch("disk"), "never").split(" && ")
    assert restored[0] == "sleep 0.01"  # the restored guest's timers fire
    assert restored[1].startswith("date -s @")
    assert restored[2] == f"{boot.RESEED_REMOTE} {boot.SEED_REMOTE}"  # the CRNG reseeded from the host's seed
    assert restored[3:] == cold
    assert "mount" not in boot._post_boot(False, None, "always") and "[always]" in boot._post_boot(False, None, "always")
    # on the RAM disk /init mounted it before the snapshot (guest memory): checked, never mounted twice
    ram = boot._post_boot(True, axes.scratch("ram"), "never").split(" && ")
    assert ram[:-1] == restored[:-1] and ram[-1].startswith('{ grep -q "^/dev/ram0 /scratch ext4 " /proc/mounts || ')


def test_a_thp_mode_the_guest_does_not_take_fails_the_boot_with_the_mode_it_has(tmp_path: Path) -> None:
    """Regression (issue 19.4): below 512 MiB the kernel ignored transparent_hugepage=always and the cells said never."""
    import subprocess

    control = tmp_path / "enabled"
    control.write_text("always madvise [never]\n")
    command = boot._post_boot(False, None, "always").replace(THP_CONTROL, str(control))
    # a control file that keeps its own mode (as a kernel that refuses it would): the read-back catches it
    command = command.replace(f"echo always > {control}", "true", 1)
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    assert done.returncode != 0 and "THP is always madvise [never], not always" in done.stderr


def test_a_kernel_without_thp_takes_never_and_refuses_other_modes(tmp_path: Path) -> None:
    """Regression (issue 23): s390x's kernel under TCG has no /sys/kernel/mm/transparent_hugepage, and the boot failed
    on writing it; such a kernel never uses huge pages, so thp=never holds and the others are refused, naming why."""
    import subprocess

    absent = str(tmp_path / "no-thp" / "enabled")
    never = subprocess.run(["sh", "-c", boot._post_boot(False, None, "never").replace(THP_CONTROL, absent)], capture_output=True, text=True)
    assert never.returncode == 0, never.stderr
    always = subprocess.run(
        ["sh", "-c", boot._post_boot(False, None, "always").replace(THP_CONTROL, absent)], capture_output=True, text=True
    )
    assert always.returncode != 0 and "this kernel has no transparent huge pages: thp=always cannot be applied" in always.stderr
    from lab.measure.groups import thp_mode

    assert thp_mode("") == "none" and thp_mode("always [madvise] never") == "madvise"


def test_a_snapshot_must_be_complete_and_private(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    d = tmp_path / "snapshots" / "arm64-0123456789abcdef"
    d.mkdir(parents=True)
    (d / "state.zst").write_bytes(b"state")
    (d / "snapshot.json").write_text('{"key": "0123456789abcdef0000", "image": "img"}')
    (d / "state.zst").chmod(0o644)
    assert store.find("arm64", "0123456789abcdef0000") is None  # readable by others: the guest's host key is in it
    (d / "state.zst").chmod(0o600)
    assert store.find("arm64", "0123456789abcdef0000") == snapshots.Snapshot(d, "0123456789abcdef0000")
    assert store.find("arm64", "0123456789abcdef1111") is None  # another key with the same prefix
    assert store.prune({"0123456789abcdef0000"}) == [] and store.prune({"other"}) == [d] and not d.exists()


def test_prune_spares_a_live_savers_work_dir_and_removes_dead_ones(tmp_path: Path) -> None:
    """Regression (issue 19.7): prune removed the temp dir of a snapshot being saved by a running lab."""
    import os
    import subprocess

    store = SnapshotStore(tmp_path)
    live = tmp_path / "snapshots" / f".arm64-0123456789abcdef-{os.getpid()}"
    dead_pid = subprocess.run(["true"], check=True) and max(int(p) for p in os.listdir("/proc") if p.isdigit()) + 100000
    dead = tmp_path / "snapshots" / f".arm64-0123456789abcdef-{dead_pid}"
    live.mkdir(parents=True)
    dead.mkdir()
    assert store.prune(set()) == [dead] and live.exists()


def test_snapshots_key_must_be_a_boolean(tmp_path: Path) -> None:
    bad = tmp_path / "lab.yaml"
    bad.write_text("guest:\n  snapshots: sometimes\n")
    with pytest.raises(UserError, match=r"guest\.snapshots: 'sometimes' is not valid"):
        config.load(bad)
    assert config.load(REPO / "lab.yaml").guest.snapshots is True


def test_a_snapshot_that_cannot_be_written_is_a_boot_error_not_an_abort(tmp_path: Path) -> None:
    """Regression (issue 19.7): an OSError while saving escaped boot() and the runner (which catch BootError) and
    aborted the whole run."""
    from lab.deadline import Deadline
    from lab.errors import BootError

    (tmp_path / "snapshots").write_text("a file where the directory should be")

    class NoQMP:
        def command(self, name: str, deadline: Deadline, **kw: object) -> object:
            raise AssertionError("nothing is asked of QEMU before the directory exists")

    with pytest.raises(BootError, match="saving the arm64 guest failed"):
        SnapshotStore(tmp_path).save(NoQMP(), "arm64", "k" * 64, "img", Deadline(5))  # type: ignore[arg-type]


def test_the_snapshot_key_needs_only_the_images_arch_and_key(tmp_path: Path) -> None:
    """lab images prune computes the current snapshot keys without the images' files."""
    from lab import arches
    from lab.guests.images import Image
    from lab.guests.keys import KeyPair

    cfg = config.load(Path(__file__).resolve().parents[2] / "lab.yaml")
    for arch in arches.ARCHES:
        image = Image(arch, "k" * 64, tmp_path, {}, KeyPair(tmp_path / "k", "ssh-ed25519 AAAA"))
        for e in (HOST, Emulator("forky", tmp_path / "qemu", "1:11.1.2", "ld.so", ("lib",), "mods", ("share",))):
            assert boot.snapshot_key_of(cfg, arch, image.key, e) == boot.snapshot_key(cfg, image, e)


def test_an_earlier_failing_step_is_not_reported_as_a_thp_mismatch(tmp_path: Path) -> None:
    """Regression (review): `a && b || {{ echo THP...; }}` printed the THP message when the reseed or clock failed."""
    import subprocess

    control = tmp_path / "enabled"
    control.write_text("always madvise [never]\n")
    command = "false && " + boot._post_boot(False, None, "never").replace(THP_CONTROL, str(control))
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    assert done.returncode != 0 and "THP is" not in done.stderr


def test_a_ram_scratch_needs_a_kernel_with_the_ram_disk_driver(tmp_path: Path) -> None:
    """Issue 21: brd missing from the kernel is one line with the remedy (the runner fails the cells at `image`)."""
    from lab import arches
    from lab.guests.images import Image
    from lab.guests.keys import KeyPair

    cfg = config.load(Path(__file__).resolve().parents[2] / "lab.yaml")
    key = KeyPair(tmp_path / "k", "ssh-ed25519 AAAA")
    without = Image(arches.get("arm64"), "k" * 64, tmp_path, {"kernel_release": "6.1-mine", "ram_disk": False}, key)
    problem = boot.scratch_problem(replace(cfg, guest=replace(cfg.guest, scratch="ram")), without)
    assert problem is not None and "brd" in problem.message and "6.1-mine" in problem.message
    assert "guest.scratch: disk" in problem.remedy
    assert boot.scratch_problem(replace(cfg, guest=replace(cfg.guest, scratch="disk")), without) is None
    assert boot.scratch_problem(cfg, replace(without, manifest={"kernel_release": "6.1", "ram_disk": True})) is None
