"""Boot an image and hand back a connected guest: the one place that composes image, VM and SSH.

``with boot(...) as b:`` yields a :class:`Booted` whose QEMU is shut down and
whose SSH session is closed on every exit path.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from lab.config import Config
from lab.deadline import Deadline
from lab.errors import BootError, GuestError
from lab.guests import accel as accel_mod
from lab.guests.images import Image
from lab.guests.keys import client_key
from lab.guests.protocol import FAIL_MARKER, READY_MARKER
from lab.guests.qemu import VM, VMSpec, free_port, kernel_cmdline, qemu_argv
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


def _launch(cfg: Config, image: Image, accel: str, log_dir: Path, deadline: Deadline, tb_size_mib: int | None) -> VM:
    """Start QEMU and wait for the ready marker; retry with a new port if QEMU lost the port race."""
    arch = image.arch
    for attempt in range(1, PORT_ATTEMPTS + 1):
        spec = VMSpec(
            arch=arch,
            kernel=image.kernel,
            initrd=image.initrd,
            scratch=image.scratch,
            append=kernel_cmdline(arch, cfg.guest.transparent_hugepage, cfg.guest.kernel_args),
            memory_mib=cfg.guest.memory_mib,
            cpus=cfg.guest.cpus,
            accel=accel,
            ssh_port=free_port(),
            console_log=log_dir / f"console-{accel}.log",
            tb_size_mib=tb_size_mib,
        )
        vm = VM(qemu_argv(spec), spec.console_log, READY_MARKER, FAIL_MARKER, cfg.timeouts.scaled("shutdown"), arch.name, spec.ssh_port)
        try:
            vm.launch()
            vm.wait_ready(deadline)
            return vm
        except BaseException as exc:
            vm.shutdown()
            port_lost = isinstance(exc, BootError) and "host forwarding" in exc.details
            if not port_lost or attempt == PORT_ATTEMPTS:
                raise
            log.info("%s: port %d was taken; retrying", arch.name, spec.ssh_port)
    raise AssertionError("unreachable")


@contextmanager
def boot(
    cfg: Config, image: Image, accel_choice: str | None = None, log_dir: Path | None = None, tb_size_mib: int | None = None
) -> Iterator[Booted]:
    """Boot ``image`` (KVM or TCG per ``accel_choice``/config), connect over SSH, yield; always clean up."""
    arch = image.arch
    log_dir = log_dir or new_log_dir(cfg, arch.name)
    memo = accel_mod.KvmMemo(cfg.cache_dir / "accel.json")
    memo_key = memo.key(arch, image.key)
    choice = accel_choice or cfg.accel
    plan = accel_mod.plan(choice, arch, memo.broken(memo_key), accel_mod.kvm_precheck(arch))
    with ExitStack() as stack:
        vm: VM | None = None
        note = plan.note
        for accel in plan.accels:
            probing = accel == "kvm" and len(plan.accels) > 1
            seconds = cfg.timeouts.scaled("kvm_probe" if probing else "boot")
            try:
                vm = _launch(cfg, image, accel, log_dir, Deadline(seconds), tb_size_mib)
            except BootError as exc:
                if not probing:
                    raise
                memo.record(memo_key, exc.message)
                log.warning("KVM did not boot %s (%s); falling back to TCG", arch.name, exc.message)
                note = f"TCG (KVM failed: {exc.message})"
                continue
            stack.callback(vm.shutdown)
            if accel == "kvm":
                memo.record(memo_key, None)
                note = "KVM"
            break
        assert vm is not None
        guest = Guest(arch.name, vm.ssh_port, client_key(cfg.cache_dir / "keys"), image.host_key, cfg.timeouts.scaled("command"))
        stack.callback(guest.close)
        try:
            guest.connect(Deadline(cfg.timeouts.scaled("ssh")))
        except GuestError as exc:
            exc.logs = (*exc.logs, vm.console_log)  # what the guest printed says why sshd never answered
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
        )
        log.info("%s up via %s in %.2fs (ssh on 127.0.0.1:%d)", arch.name, accel, ssh_seconds, info.port)
        yield Booted(vm, guest, info)
