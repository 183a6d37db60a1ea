"""``lab doctor``: is this host able to run guests, and if not, what to do about it (payload toolchains: lab.payloads.toolchains)."""

from __future__ import annotations

import shutil
import urllib.request
from collections.abc import Callable
from dataclasses import replace

from lab.arches import ARCHES, host_can_kvm
from lab.axes import DEFAULT_QEMU
from lab.config import Config
from lab.errors import LabError
from lab.guests import accel as accel_mod
from lab.guests import emulator, qemu_store
from lab.guests.apt import KEYRING
from lab.guests.boot import boot
from lab.guests.images import ImageStore
from lab.health import Check as Check  # re-exported: doctor's lines

MIN_FREE_GIB = 2.0


def check_qemu(cfg: Config) -> list[Check]:
    """Which QEMU each arch runs and where it came from (qemu.from): the host's in PATH, or lab's own entry."""
    try:
        e = qemu_store.ensure(cfg)
    except LabError as exc:
        return [Check("qemu", "FAIL", f"qemu.from: {cfg.qemu.origin}: {exc.message}", exc.remedy)]
    checks = []
    for arch in ARCHES:
        path = shutil.which(e.binary(arch))
        if path:
            where = "host, " + path if e.root is None else f"{e.describe()}, {qemu_store.entry_of(e)}"
            checks.append(Check(f"qemu {arch.name}", "ok", f"{emulator.version(e, arch)} ({where})"))
        else:
            fix = f"apt-get install {' or '.join(arch.qemu_packages)}, or qemu.from: {DEFAULT_QEMU} in lab.yaml"
            checks.append(Check(f"qemu {arch.name}", "FAIL", f"{arch.qemu_binary} not found", fix))
        bios = e.bios(arch)
        if bios:
            lacks = e.missing(arch) if path else None
            checks.append(Check(f"firmware {arch.name}", "FAIL" if lacks else "ok", bios, lacks[1] if lacks else ""))
    return checks


def check_tools() -> list[Check]:
    checks = []
    for tool, package, required in (
        ("apt-get", "apt", True),
        ("dpkg-deb", "dpkg", True),
        ("mke2fs", "e2fsprogs", True),
        ("zstd", "zstd", True),
        ("setpriv", "util-linux", True),
        ("dropbearkey", "dropbear-bin", True),
        ("ssh", "openssh-client", False),
    ):
        found = shutil.which(tool)
        status = "ok" if found else ("FAIL" if required else "warn")
        detail = found or f"{tool} not found" + ("" if required else " (only lab shell needs it)")
        checks.append(Check(tool, status, detail, "" if found else f"apt-get install {package}"))
    ok = KEYRING.is_file()
    checks.append(Check("debian keyring", "ok" if ok else "FAIL", str(KEYRING), "" if ok else "apt-get install debian-archive-keyring"))
    return checks


def check_disk(cfg: Config) -> Check:
    probe = cfg.cache_dir
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free / 2**30
    ok = free >= MIN_FREE_GIB
    return Check(
        "free disk",
        "ok" if ok else "FAIL",
        f"{free:.1f} GiB free at {probe}",
        "" if ok else f"free {MIN_FREE_GIB:g} GiB or move paths.cache",
    )


def check_mirror(cfg: Config, store: ImageStore) -> Check:
    url = f"{store.apt.mirror}/dists/{store.recipe.suite}/InRelease"
    try:
        with urllib.request.urlopen(url, timeout=15) as resp:
            resp.read(256)
        return Check(f"apt {store.recipe.suite}", "ok", url)
    except OSError as exc:
        age = store.apt.lists_age_hours()
        status = "warn" if age is not None else "FAIL"
        detail = f"{url}: {exc}" + (f" (cached lists are {age:.0f}h old and still usable)" if age is not None else "")
        return Check(f"apt {store.recipe.suite}", status, detail, "check the network or set apt.mirror in lab.yaml")


def check_cache(store: ImageStore) -> list[Check]:
    rows = store.cached()
    bad = [r for r in rows if r.status != "ok"]
    age = store.apt.lists_age_hours()
    lists = Check(
        "apt lists",
        "ok" if age is not None else "warn",
        f"{age:.1f}h old" if age is not None else "not fetched yet",
        "lab images build fetches them",
    )
    images = Check(
        "image cache",
        "ok" if not bad else "warn",
        f"{len(rows)} image(s), {len(bad)} corrupt" if rows else "empty",
        "lab images build rebuilds corrupt or missing images" if bad or not rows else "",
    )
    return [lists, images]


def check_kvm(cfg: Config, store: ImageStore) -> list[Check]:
    """For arches this host could run natively: a real KVM boot decides (and refreshes the memo)."""
    checks = []
    for arch in ARCHES:
        if not host_can_kvm(arch):
            continue
        reason = accel_mod.kvm_precheck(arch)
        if reason:
            checks.append(
                Check(f"kvm {arch.name}", "warn", f"unavailable: {reason}; guests use TCG", "load kvm modules / add user to group kvm")
            )
            continue
        try:
            image = store.ensure(arch)
        except LabError as exc:
            checks.append(Check(f"kvm {arch.name}", "warn", f"no image to test-boot: {exc.message}", "lab images build"))
            continue
        memo = accel_mod.KvmMemo(cfg.cache_dir / "accel.json")
        e = qemu_store.ensure(cfg)  # the same binary lab run boots
        key = memo.key(arch, image.key, e)
        try:
            # A working KVM boot of these guests takes well under a second: the probe's deadline, not a TCG boot's.
            probe_cfg = replace(cfg, timeouts=replace(cfg.timeouts, boot=cfg.timeouts.kvm_probe))
            with boot(probe_cfg, image, "kvm", snapshots=False, emulator=e) as b:
                checks.append(Check(f"kvm {arch.name}", "ok", f"test boot reached SSH in {b.info.ssh_seconds:.1f}s"))
            memo.record(key, None)
        except LabError as exc:
            memo.record(key, exc.message)
            checks.append(
                Check(f"kvm {arch.name}", "warn", f"test boot failed ({exc.message}); guests use TCG", "fine for correctness; slower")
            )
    return checks


def run_checks(cfg: Config, kvm: bool = True, extra: Callable[[], list[Check]] = list) -> list[Check]:
    """Every check, in order; ``extra`` adds the layers above (the payload toolchains) before the KVM boot."""
    store = ImageStore(cfg)
    checks = check_qemu(cfg) + check_tools()
    checks += extra()
    checks.append(check_disk(cfg))
    checks.append(check_mirror(cfg, store))
    checks += check_cache(store)
    if kvm and all(c.status != "FAIL" for c in checks):
        checks += check_kvm(cfg, store)
    return checks
