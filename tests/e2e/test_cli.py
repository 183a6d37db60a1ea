"""The README's commands for real: lab run, exec, boot under Ctrl-C and SIGKILL, doctor, image cache."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from lab import arches, axes, config
from lab.guests import qemu_store
from lab.guests.boot import snapshot_key, snapshot_key_of
from lab.guests.images import Image, ImageStore, verify
from lab.guests.snapshots import SnapshotStore
from tests.e2e.conftest import interruptible, qemu_processes

LAB = [sys.executable, "-m", "lab"]


def lab(cli_config: Path, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAB, "--config", str(cli_config), *argv], capture_output=True, text=True, timeout=timeout)


def children_qemu(pid: int, cache_dir: Path) -> list[int]:
    return [p for p, _ in qemu_processes(cache_dir) if Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(pid)]


def wait_gone(pids: list[int], cache_dir: Path, seconds: float = 10) -> list[int]:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        live = [p for p, _ in qemu_processes(cache_dir) if p in pids]
        if not live:
            return []
        time.sleep(0.1)
    return live


def test_lab_smoke_boots_every_arch(cli_config: Path, images: dict[str, Image]) -> None:
    proc = lab(cli_config, "smoke", "--arch", "everything", "--json")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["arch"] for r in results] == [a.name for a in arches.ARCHES]
    for r in results:
        facts = dict(r["facts"])
        assert r["ok"] and r["problems"] == [] and r["accel"] in ("kvm", "tcg")
        assert facts["machine"] == arches.get(r["arch"]).uname
        row = arches.get(r["arch"])
        device = axes.scratch_device(config.load(cli_config).guest.scratch, row.disk)
        assert facts["page_size"] == str(row.flavours[0].bytes) and facts["scratch"] == f"{device} ext4"
        assert facts["elf_class"].strip() == {32: "1", 64: "2"}[row.bits]  # i386 and armhf: 32-bit userlands
        assert 0 < r["ssh_seconds"] < 120


def test_lab_exec_returns_the_commands_status(cli_config: Path, images: dict[str, Image]) -> None:
    proc = lab(cli_config, "exec", "--arch", "riscv64", "--", "sh", "-c", "uname -m; exit 7")
    assert proc.returncode == 7
    assert proc.stdout.strip() == "riscv64"


def boot_in_background(cli_config: Path, cfg: config.Config, arch: str) -> tuple[subprocess.Popen[str], list[int]]:
    proc = subprocess.Popen(
        [*LAB, "--config", str(cli_config), "boot", "--arch", arch],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Ctrl-C"):
            break
    assert any(line.startswith("connect with:  ssh -p ") for line in lines), lines
    qemu = children_qemu(proc.pid, cfg.cache_dir)
    assert len(qemu) == 1
    return proc, qemu


def test_a_child_the_tests_interrupt_hears_sigint_even_when_the_suite_ignores_it() -> None:
    """Regression: the suite run as `./test.sh &` from a script ignored SIGINT, so did every lab it started, and
    the Ctrl-C tests hung (leaving a QEMU that failed three more tests)."""
    probe = [sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"]
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        plain = subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()
        fixed = subprocess.run(probe, capture_output=True, text=True, check=True, preexec_fn=interruptible).stdout.strip()
    finally:
        signal.signal(signal.SIGINT, old)
    assert (plain, fixed) == ("False", "True")


def test_ctrl_c_on_lab_boot_stops_its_qemu(cli_config: Path, cfg: config.Config, images: dict[str, Image]) -> None:
    proc, qemu = boot_in_background(cli_config, cfg, "arm64")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert "interrupted; guests were shut down" in (proc.stderr.read() if proc.stderr else "")
    assert wait_gone(qemu, cfg.cache_dir, 1) == []


def test_sigterm_on_lab_boot_stops_its_qemu(cli_config: Path, cfg: config.Config, images: dict[str, Image]) -> None:
    proc, qemu = boot_in_background(cli_config, cfg, "x86_64")
    proc.terminate()
    assert proc.wait(timeout=30) == 130
    assert wait_gone(qemu, cfg.cache_dir, 1) == []


def test_sigkilled_controller_takes_qemu_with_it(cli_config: Path, cfg: config.Config, images: dict[str, Image]) -> None:
    proc, qemu = boot_in_background(cli_config, cfg, "riscv64")
    proc.kill()  # no cleanup code runs: the kernel's parent-death signal must do it
    proc.wait(timeout=30)
    assert wait_gone(qemu, cfg.cache_dir, 10) == []


def test_doctor_passes_on_a_set_up_host(cli_config: Path, images: dict[str, Image]) -> None:
    proc = lab(cli_config, "doctor", "--json")
    assert proc.returncode == 0, proc.stdout
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    for a in arches.ARCHES:
        assert checks[f"qemu {a.name}"]["status"] == "ok"
    for a in arches.ARCHES:
        assert a.bios is None or checks[f"firmware {a.name}"]["status"] == "ok"  # riscv64: OpenSBI, loong64: UEFI
    assert checks["image cache"]["status"] == "ok"


def test_image_cache_is_reused_and_corruption_is_rebuilt(store: ImageStore, images: dict[str, Image]) -> None:
    arch = arches.get("riscv64")
    again = store.ensure(arch)
    assert again.dir == images["riscv64"].dir
    assert again.manifest["built_at"] == images["riscv64"].manifest["built_at"]  # not rebuilt
    initrd = again.initrd
    data = bytearray(initrd.read_bytes())
    data[len(data) // 2] ^= 0xFF
    initrd.write_bytes(bytes(data))
    assert verify(again.dir) is not None
    rebuilt = store.ensure(arch)
    assert rebuilt.dir == again.dir and verify(rebuilt.dir) is None
    assert rebuilt.initrd.read_bytes() != bytes(data)


def test_prune_keeps_current_images_only(store: ImageStore, images: dict[str, Image]) -> None:
    stale = store.root / "arm64-0000000000000000"
    stale.mkdir()
    (stale / "kernel").write_bytes(b"old")
    abandoned = store.root / ".x86_64-abandoned"
    abandoned.mkdir()
    snaps = SnapshotStore(store.cfg.cache_dir)
    current_snapshot = snaps.find("x86_64", snapshot_key(store.cfg, images["x86_64"], qemu_store.ensure(store.cfg)))
    other_qemu = snaps.root / "x86_64-ffffffffffffffff"  # a snapshot of a current image under another QEMU build
    other_qemu.mkdir(parents=True, mode=0o700)
    (other_qemu / "snapshot.json").write_text(json.dumps({"key": "f" * 64, "image": images["x86_64"].key}))
    deleted = store.prune(lambda arch, key: [snapshot_key_of(store.cfg, arch, key, qemu_store.ensure(store.cfg))])
    assert other_qemu in deleted and not other_qemu.exists()  # regression (issue 19.7): stale snapshots stayed forever
    assert current_snapshot is None or current_snapshot.dir.exists()
    # The cache is shared: entries of older builder versions are stale too and go with ours; current ones never.
    assert {stale, abandoned} <= set(deleted) and not {img.dir for img in images.values()} & set(deleted)
    assert all(verify(img.dir) is None for img in images.values())


def test_lab_probe_is_a_view_over_the_run_engine(cli_config: Path, cfg: config.Config, images: dict[str, Image]) -> None:
    """Same file bytes as lab run (run.file_bytes: 1M = 256 pages), every run parsed, nothing left in the store."""
    store = cfg.results_dir / "lab.sqlite"
    before = store.stat().st_mtime_ns if store.exists() else None
    proc = lab(cli_config, "probe", "--arch", "riscv64", "--variant", "musl-static,glibc-dynamic", "--repeat", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)
    assert sorted((r["variant"], r["repeat"]) for r in runs) == [
        ("glibc-dynamic", 0),
        ("glibc-dynamic", 1),
        ("musl-static", 0),
        ("musl-static", 1),
    ]
    for r in runs:
        assert r["arch"] == "riscv64" and r["reexec"] is True
        assert r["file"]["pages"] == 2**20 // r["facts"]["page_size"]  # run.file_bytes, as lab run reads
    assert (store.stat().st_mtime_ns if store.exists() else None) == before
    table = lab(cli_config, "probe", "--arch", "x86_64", "--variant", "musl-static", "--repeat", "1")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == [
        "arch",
        "variant",
        "entry",
        "overhead",
        "malloc",
        "touch1",
        "touch2",
        "file_map",
        "file_read",
    ]
    assert "median minor/major faults per stage over 1 runs, buffer 1048576 bytes" in table.stdout


def readable_by_others(path: Path) -> bool:
    """Whether a user other than the owner (and outside its group) can read ``path``: o+r on it, o+x on every parent."""
    if not path.stat().st_mode & 0o004:
        return False
    return all(p.stat().st_mode & 0o001 for p in path.parents)


def test_no_key_material_in_the_cache_is_readable_by_others(cfg: config.Config, images: dict[str, Image]) -> None:
    """Regression (issue 10.1): the initramfs carried the guest's private host key with mode 0644 under 0755 directories."""
    keys = cfg.cache_dir / "keys"
    private = [k.read_bytes() for k in keys.iterdir() if k.is_file() and not k.name.endswith(".pub")]
    assert len(private) >= 1 + len(images)  # the client key and one host key per arch
    holding = []
    for f in cfg.cache_dir.rglob("*"):
        if f.is_symlink() or not f.is_file() or f.stat().st_size > 256 * 2**20 or "zig" in f.relative_to(cfg.cache_dir).parts[:1]:
            continue
        data = f.read_bytes()
        if any(secret in data for secret in private):
            holding.append(f)
            assert not readable_by_others(f), f"{f} holds key material and others can read it"
    assert {p.parent for p in holding} >= {image.dir for image in images.values()}  # the initramfs of every image was checked
