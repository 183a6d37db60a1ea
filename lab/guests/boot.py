"""Boot an image and hand back a connected guest: the one place that composes image, VM and SSH.

``with boot(...) as b:`` yields a :class:`Booted` whose QEMU is shut down and
whose SSH session is closed on every exit path.
"""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from lab import axes
from lab.arches import Arch
from lab.axes import Scratch
from lab.config import Config
from lab.deadline import Cancelled, Deadline, cancelled
from lab.errors import BootError, GuestError, ImageError
from lab.guests import accel as accel_mod
from lab.guests import emulator as emulator_mod
from lab.guests import qemu_store
from lab.guests import snapshots as snapshots_mod
from lab.guests.emulator import Emulator
from lab.guests.images import Image
from lab.guests.keys import client_key
from lab.guests.protocol import FAIL_MARKER, RAM_MODULE, READY_MARKER, SCRATCH_MOUNT, THP_CONTROL
from lab.guests.qemu import VM, VMSpec, free_port, kernel_cmdline, qemu_argv, tail
from lab.guests.qmp import QMP
from lab.guests.snapshots import SnapshotStore
from lab.guests.ssh import Guest

log = logging.getLogger(__name__)
PORT_ATTEMPTS = 3


@dataclass(frozen=True)
class BootInfo:
    arch: str
    accel: str  # what actually ran: kvm | tcg
    accel_note: str  # why
    port: int
    console_log: Path
    ready_seconds: float  # QEMU start → ready marker
    ssh_seconds: float  # QEMU start → authenticated SSH session
    kernel_release: str
    image_key: str
    argv: tuple[str, ...]
    boot: str = "cold"  # cold | restored | cold (why not restored / not saved)
    qemu_version: str = ""  # the QEMU that ran it (`--version`'s first line)
    qemu_origin: str = ""  # where that QEMU came from: host, or SUITE PACKAGE-VERSION
    scratch: str = ""  # the block device under the test file (guest.scratch: lab.axes.SCRATCHES)


@dataclass(frozen=True)
class Booted:
    vm: VM
    guest: Guest
    info: BootInfo


def new_log_dir(cfg: Config, arch_name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = cfg.results_dir / "boots" / f"{stamp}-{arch_name}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _spec(
    cfg: Config,
    image: Image,
    accel: str,
    log_dir: Path,
    tb_size_mib: int | None,
    emulator: Emulator,
    incoming: Path | None = None,
    live: bool = True,
) -> VMSpec:
    """The guest's VM spec; ``live=False`` leaves out the per-launch port and QMP socket (for snapshot keys)."""
    arch = image.arch
    return VMSpec(
        arch=arch,
        kernel=image.kernel,
        initrd=image.initrd,
        scratch=image.scratch,
        append=kernel_cmdline(arch, cfg.guest.transparent_hugepage, cfg.guest.kernel_args, cfg.guest.scratch),
        memory_mib=cfg.guest.memory_mib,
        cpus=cfg.guest.cpus,
        accel=accel,
        ssh_port=free_port() if live else 1,
        console_log=log_dir / f"console-{accel}{'-restored' if incoming else ''}.log",
        tb_size_mib=tb_size_mib,
        qmp=Path(tempfile.mkdtemp(prefix="lab-qmp-")) / "qmp.sock" if live else None,
        incoming=incoming,
        emulator=emulator,
        cpu=image.flavour.cpu,
    )


def _launch(
    cfg: Config,
    image: Image,
    accel: str,
    log_dir: Path,
    deadline: Deadline,
    tb_size_mib: int | None,
    emulator: Emulator,
    incoming: Path | None = None,
) -> tuple[VM, QMP]:
    """Start QEMU and wait until the guest is up: its ready marker (a boot), or QMP's "running" (a restore).

    Retries with a new port if QEMU lost the port race.
    """
    arch = image.arch
    for attempt in range(1, PORT_ATTEMPTS + 1):
        spec = _spec(cfg, image, accel, log_dir, tb_size_mib, emulator, incoming)
        shutdown = cfg.timeouts.scaled("shutdown")
        vm = VM(qemu_argv(spec), spec.console_log, READY_MARKER, FAIL_MARKER, shutdown, arch.name, spec.ssh_port, emulator.env())
        try:
            vm.launch()
            assert spec.qmp is not None
            qmp = QMP(spec.qmp, deadline, vm.check_alive)
            if incoming:  # the snapshot was taken paused: it loads paused, then runs on "cont"
                if qmp.wait_status({"paused", "running"}, deadline) == "paused":
                    qmp.command("cont", deadline)
                    qmp.wait_status({"running"}, deadline)
                vm.ready_at = time.monotonic()
            else:
                vm.wait_ready(deadline)
            return vm, qmp
        except BaseException as exc:
            vm.shutdown()
            port_lost = isinstance(exc, BootError) and "host forwarding" in tail(vm.stderr_log, 5)
            if not port_lost or attempt == PORT_ATTEMPTS:
                raise
            log.info("%s: port %d was taken; retrying", arch.name, spec.ssh_port)
        finally:
            if spec.qmp is not None and (vm.proc is None or vm.returncode is not None):
                shutil.rmtree(spec.qmp.parent, ignore_errors=True)
    raise AssertionError("unreachable")


def snapshot_key(cfg: Config, image: Image, emulator: Emulator) -> str:
    """The key of ``image``'s guest snapshot under ``cfg`` and ``emulator`` (lab.guests.snapshots.key)."""
    return snapshots_mod.key(_spec(cfg, image, "tcg", Path("/"), None, emulator, live=False), image.key)


def snapshot_key_of(cfg: Config, arch: Arch, image_key: str, emulator: Emulator) -> str:
    """:func:`snapshot_key` from an image's arch and key alone (the key leaves the image's paths out)."""
    placeholder = Path("/@")
    spec = VMSpec(
        arch=arch,
        kernel=placeholder,
        initrd=placeholder,
        scratch=placeholder,
        append=kernel_cmdline(arch, cfg.guest.transparent_hugepage, cfg.guest.kernel_args, cfg.guest.scratch),
        memory_mib=cfg.guest.memory_mib,
        cpus=cfg.guest.cpus,
        accel="tcg",
        ssh_port=1,
        console_log=placeholder,
        emulator=emulator,
    )
    return snapshots_mod.key(spec, image_key)


def _restore(
    cfg: Config, image: Image, log_dir: Path, tb_size_mib: int | None, store: SnapshotStore, emulator: Emulator
) -> tuple[VM, QMP] | str:
    """A restored guest; or why not ("" when there is no snapshot; a failed one is discarded and warned about)."""
    k = snapshot_key(cfg, image, emulator)
    snap = store.find(image.arch.name, k)
    if snap is None:
        return ""
    try:
        return _launch(cfg, image, "tcg", log_dir, Deadline(cfg.timeouts.scaled("restore")), tb_size_mib, emulator, snap.state)
    except BootError as exc:
        if cancelled():  # killed under a cancelled run: no verdict on the snapshot
            raise Cancelled() from None
        log.warning("%s: the saved snapshot did not restore (%s); discarded, booting cold", image.arch.name, exc.message)
        store.discard(snap)
        return exc.message


RESEED_REMOTE = "/tmp/lab-reseed"  # the helper (payloads/reseed.c), uploaded after every restore
SEED_REMOTE = "/tmp/lab-seed"  # its seed from the host (0600; the helper deletes it)
SEED_BYTES = 64


def scratch_problem(cfg: Config, image: Image) -> ImageError | None:
    """Why ``image`` cannot put its scratch file system where guest.scratch says (its kernel has no RAM disk)."""
    if cfg.guest.scratch != "ram" or image.ram_disk:
        return None
    return ImageError(
        f"{image.arch.name}: guest.scratch: ram needs the kernel's {RAM_MODULE} module, and {image.kernel_release} has none",
        "set guest.scratch: disk (or --axis scratch=disk), or use a kernel built with CONFIG_BLK_DEV_RAM=m",
    )


def _post_boot(restored: bool, scratch: Scratch | None, thp: str, disk: str = "vda") -> str:
    """The first command in every guest. After a restore: prove the timers fire (a restored riscv64 guest's did
    not), set the wall clock (the snapshot's is stale) and reseed the CRNG from the host's seed (every guest
    restored from one snapshot starts from the same RNG state). Then the configured THP mode, set through sysfs
    and read back (the kernel ignores ``transparent_hugepage=`` below 512 MiB of RAM, so the command line alone
    is not enough), and the scratch file system: on the virtio disk, mounted now (a disk is never part of a
    snapshot); on the RAM disk, mounted by /init (guest memory: the snapshot holds it) and checked. Pure apart from
    the clock it embeds."""
    steps = []
    if restored:
        steps += ["sleep 0.01", f"date -s @{int(time.time())} >/dev/null", f"{RESEED_REMOTE} {SEED_REMOTE}"]
    # A kernel without THP (s390x's under TCG: no EDAT-1) has no control: it never uses huge pages; other modes fail
    apply = (
        f"echo {shlex.quote(thp)} > {THP_CONTROL} && "
        f'{{ grep -qF {shlex.quote(f"[{thp}]")} {THP_CONTROL} || {{ echo "THP is $(cat {THP_CONTROL}), not {thp}" >&2; false; }}; }}'
    )
    absent = "" if thp == "never" else f'else echo "this kernel has no transparent huge pages: thp={thp} cannot be applied" >&2; false; '
    steps.append(f"if [ -e {THP_CONTROL} ]; then {apply}; {absent}fi")
    device = scratch.device.format(disk=disk) if scratch else ""  # ``disk``: the arch's scratch disk (lab.arches)
    if scratch and not scratch.at_init:
        steps.append(f"mount -t ext4 -o noatime {device} {SCRATCH_MOUNT}")
    elif scratch:
        mounted = f"{device} {SCRATCH_MOUNT} ext4 "
        steps.append(f'{{ grep -q "^{mounted}" /proc/mounts || {{ echo "{SCRATCH_MOUNT} is not {device}" >&2; false; }}; }}')
    return " && ".join(steps)


@contextmanager
def boot(
    cfg: Config,
    image: Image,
    accel_choice: str | None = None,
    log_dir: Path | None = None,
    tb_size_mib: int | None = None,
    snapshots: bool = True,
    reseed: Path | None = None,
    emulator: Emulator | None = None,
    uploads: Sequence[tuple[str, bytes, int]] = (),
) -> Iterator[Booted]:
    """Boot ``image`` (KVM or TCG per ``accel_choice``/config), connect over SSH, yield; always clean up.

    A TCG guest is restored from its snapshot when there is one (``snapshots`` and ``guest.snapshots``);
    otherwise it boots cold and its snapshot is saved. ``BootInfo.boot`` says which happened, and why.
    A restore needs ``reseed``, the arch's static reseed helper (payloads/reseed.c): without it the guest boots cold.
    ``emulator``: the QEMU build to run (default: ``qemu.from``'s, lab.guests.qemu_store). ``uploads`` ((path,
    bytes, mode)) arrive in the guest with its setup, in the same round trip (:meth:`Guest.put_files`).
    """
    arch = image.arch
    if problem := scratch_problem(cfg, image):
        raise problem
    e = emulator or qemu_store.ensure(cfg)
    log_dir = log_dir or new_log_dir(cfg, arch.name)
    memo = accel_mod.KvmMemo(cfg.cache_dir / "accel.json")
    memo_key = memo.key(arch, image.key, e)
    choice = accel_choice or cfg.accel
    plan = accel_mod.plan(choice, arch, memo.broken(memo_key), accel_mod.kvm_precheck(arch))
    works = emulator_mod.snapshots_work(e, arch)
    usable = snapshots and cfg.guest.snapshots and works and reseed is not None
    snaps = SnapshotStore(cfg.cache_dir) if usable else None
    path = (
        "cold"
        if snaps
        else f"cold ({arch.no_snapshots})"
        if not works
        else "cold (snapshots off)"
        if not (snapshots and cfg.guest.snapshots)
        else "cold (no reseed helper)"
    )
    with ExitStack() as stack:
        vm: VM | None = None
        note = plan.note
        for accel in plan.accels:
            qmp: QMP | None = None
            if snaps is not None and accel == "tcg":
                restored = _restore(cfg, image, log_dir, tb_size_mib, snaps, e)
                if isinstance(restored, tuple):
                    vm, qmp = restored
                    path = "restored"
                elif restored:
                    path = f"cold (restore failed: {restored})"
            if vm is None:
                probing = accel == "kvm" and len(plan.accels) > 1
                seconds = cfg.timeouts.scaled("kvm_probe" if probing else "boot")
                try:
                    vm, qmp = _launch(cfg, image, accel, log_dir, Deadline(seconds), tb_size_mib, e)
                except BootError as exc:
                    if not probing or cancelled():  # a cancelled probe says nothing about KVM
                        raise
                    memo.record(memo_key, exc.message)
                    log.warning("KVM did not boot %s (%s); falling back to TCG", arch.name, exc.message)
                    note = f"TCG (KVM failed: {exc.message})"
                    continue
            assert qmp is not None
            stack.callback(shutil.rmtree, qmp.path.parent, True)
            stack.callback(vm.shutdown)
            stack.callback(qmp.close)
            if accel == "kvm":
                memo.record(memo_key, None)
                note = "KVM"
            elif snaps is not None and path != "restored":
                k = snapshot_key(cfg, image, e)
                try:  # before any SSH session and before the scratch disk is mounted
                    snaps.save(qmp, arch.name, k, image.key, Deadline(cfg.timeouts.scaled("restore")))
                except BootError as exc:
                    log.warning("%s: could not save a snapshot (%s); booting cold next time too", arch.name, exc.message)
                    path = f"{path} (snapshot not saved: {exc.message})"
            break
        assert vm is not None
        guest = Guest(arch.name, vm.ssh_port, client_key(cfg.cache_dir / "keys"), image.host_key, cfg.timeouts.scaled("command"))
        stack.callback(guest.close)
        try:
            guest.connect(Deadline(cfg.timeouts.scaled("ssh")), lambda: vm.check_alive("before its SSH server answered"))
            is_restored = path == "restored"
            files = list(uploads)
            if is_restored:
                assert reseed is not None
                files += [(RESEED_REMOTE, reseed.read_bytes(), 0o755), (SEED_REMOTE, secrets.token_bytes(SEED_BYTES), 0o600)]
            scratch = axes.scratch(cfg.guest.scratch) if image.scratch.exists() else None
            setup = _post_boot(is_restored, scratch, cfg.guest.transparent_hugepage, image.arch.disk)
            # One round trip: the files, then the setup. Bounded: a restored guest whose timers are dead hangs in its
            # first sleep (lab.guests.snapshots).
            done = (
                guest.put_files(files, then=setup, timeout=cfg.timeouts.scaled("restore"))
                if files
                else guest.run(setup, timeout=cfg.timeouts.scaled("restore"))
            )
            if done.exited != 0:
                why = (done.stderr.strip() or done.stdout.strip())[-300:] or "no output"
                raise GuestError(
                    f"{arch.name}: setting up the booted guest failed (exit status {done.exited}): {why}", "see the console log"
                )
        except (GuestError, BootError) as exc:
            exc.logs = (*exc.logs, vm.console_log)  # what the guest printed says why sshd never answered
            # A cancelled run's guests are killed under it: that is no verdict on the snapshot.
            if (
                path == "restored" and snaps is not None and not cancelled()
            ):  # a snapshot whose guest does not answer is no use: boot cold next time
                bad = snaps.find(arch.name, snapshot_key(cfg, image, e))
                if bad is not None:
                    snaps.discard(bad)
                    log.warning("%s: the restored guest failed (%s); its snapshot is discarded", arch.name, exc.message)
            raise
        ssh_seconds = time.monotonic() - vm.launched_at
        info = BootInfo(
            arch=arch.name,
            accel=accel,
            accel_note=note,
            port=vm.ssh_port,
            console_log=vm.console_log,
            ready_seconds=vm.ready_at - vm.launched_at,
            ssh_seconds=ssh_seconds,
            kernel_release=image.kernel_release,
            image_key=image.key,
            argv=tuple(vm.argv),
            boot=path,
            qemu_version=emulator_mod.version(e, arch),
            qemu_origin=e.describe(),
            scratch=cfg.guest.scratch,
        )
        log.info("%s up via %s (%s) in %.2fs (ssh on 127.0.0.1:%d)", arch.name, accel, path, ssh_seconds, info.port)
        yield Booted(vm, guest, info)
