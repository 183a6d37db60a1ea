"""QEMU: a pure argv builder and :class:`VM`, the one owner of a QEMU process.

Lifecycle of a VM: the constructor only records settings; :meth:`VM.launch`
starts QEMU in its own process group; :meth:`VM.wait_ready` watches the
console log for the guest's ready marker under a deadline while checking that
QEMU is alive; :meth:`VM.shutdown` asks politely (SIGTERM, which QEMU treats as
"quit"), waits, then kills the whole process group. ``with VM(...)`` guarantees
the shutdown on every exit path, KeyboardInterrupt included. QEMU also gets
PR_SET_PDEATHSIG (set by ``setpriv`` in the launch argv, fork-safe), so even a SIGKILLed
controller leaves no QEMU behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from lab import axes
from lab.arches import Arch
from lab.deadline import Deadline, check
from lab.errors import BootError, InfraError
from lab.guests.emulator import HOST, Emulator
from lab.guests.protocol import SSH_GUEST_PORT

log = logging.getLogger(__name__)

POLL = 0.05  # seconds between liveness/console checks


@dataclass(frozen=True)
class VMSpec:
    """Everything that determines a guest's QEMU command line."""

    arch: Arch
    kernel: Path
    initrd: Path
    append: str
    memory_mib: int
    cpus: int
    accel: str  # "kvm" | "tcg"
    ssh_port: int
    console_log: Path
    scratch: Path | None = None
    tb_size_mib: int | None = None  # TCG translation cache cap (several guests at once)
    qmp: Path | None = None  # QEMU's control socket (lab.guests.qmp)
    incoming: Path | None = None  # restore this zstd-compressed snapshot instead of booting (lab.guests.snapshots)
    emulator: Emulator = HOST  # which QEMU build runs it (lab.guests.emulator)
    cpu: str = ""  # the TCG CPU model its kernel flavour needs ("": the arch's; lab.arches.Flavour)


# Per virtio transport: a PCI NIC's option ROM (iPXE) is useless with -kernel and costs boot time; CCW has none
NIC_OPTIONS = {"pci": ",romfile="}


def kernel_cmdline(arch: Arch, thp: str, extra: tuple[str, ...], scratch: str) -> str:
    """The guest kernel's command line; ``scratch`` (lab.axes.SCRATCHES) tells /init where the scratch lives."""
    told = axes.scratch(scratch).cmdline
    return " ".join((f"console={arch.console}", "rdinit=/init", f"transparent_hugepage={thp}", *extra, *([told] if told else [])))


def _opt(path: Path) -> str:
    """A path as a QEMU option value (commas are doubled)."""
    return str(path).replace(",", ",,")


def qemu_argv(spec: VMSpec) -> list[str]:
    """The full QEMU command line for ``spec``. Pure: no I/O, no environment."""
    a = spec.arch
    if spec.accel == "kvm":
        accel, cpu = "kvm", a.kvm_cpu
    elif spec.accel == "tcg":
        accel = "tcg" if spec.tb_size_mib is None else f"tcg,tb-size={spec.tb_size_mib}"
        cpu = spec.cpu or a.cpu
    else:
        raise ValueError(f"accel must be kvm or tcg, not {spec.accel!r}")
    e = spec.emulator
    argv = [*e.command(a), "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", *e.options()]
    argv += ["-machine", a.machine, "-accel", accel, "-cpu", cpu, "-smp", str(spec.cpus), "-m", f"{spec.memory_mib}M"]
    bios = e.bios(a)
    if bios:
        argv += ["-bios", bios]
    argv += ["-kernel", str(spec.kernel), "-initrd", str(spec.initrd), "-append", spec.append]
    argv += ["-serial", f"file:{spec.console_log}"]
    argv += ["-netdev", f"user,id=net0,ipv6=off,hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:{SSH_GUEST_PORT}"]
    argv += ["-device", f"virtio-net-{a.virtio},netdev=net0" + NIC_OPTIONS.get(a.virtio, "")]
    if spec.scratch is not None:
        argv += ["-drive", f"file={_opt(spec.scratch)},format=raw,if=none,id=scratch,snapshot=on"]
        argv += ["-device", f"virtio-blk-{a.virtio},drive=scratch"]
    if spec.qmp is not None:
        argv += ["-qmp", f"unix:{_opt(spec.qmp)},server=on,wait=off"]
    if spec.incoming is not None:  # this QEMU refuses file: migration URIs; exec: works
        argv += ["-incoming", f"exec:zstd -dc {shlex.quote(str(spec.incoming))}"]
    return argv


def free_port() -> int:
    """An ephemeral TCP port free on 127.0.0.1 right now (QEMU may still lose a race for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# The parent-death signal is set by a tiny exec wrapper, not a preexec_fn: runner and paramiko threads are
# alive when QEMU starts, and Python documents preexec_fn as unsafe with threads (the child may deadlock).
PDEATHSIG_WRAPPER = ("setpriv", "--pdeathsig", "KILL", "--")


def launch_argv(argv: list[str]) -> list[str]:
    """QEMU's command line as launched: under a wrapper that makes the kernel SIGKILL it when lab dies. Pure."""
    return [*PDEATHSIG_WRAPPER, *argv]


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_bytes()[-16384:].decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.replace("\r", "").splitlines()[-lines:])


_live: set[VM] = set()
_live_lock = threading.Lock()


def shutdown_all() -> None:
    """Shut down every VM this process has running (used when a run is interrupted)."""
    with _live_lock:
        vms = list(_live)
    for vm in vms:
        vm.shutdown()


class VM:
    """The single owner of one QEMU process (see the module docstring for the lifecycle)."""

    def __init__(
        self,
        argv: list[str],
        console_log: Path,
        ready_marker: str,
        fail_marker: str | None = None,
        shutdown_timeout: float = 5.0,
        name: str = "guest",
        ssh_port: int = 0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.console_log = console_log
        self.stderr_log = console_log.with_name(console_log.stem + ".qemu-stderr.log")
        self.ready_marker = ready_marker.encode()
        self.fail_marker = fail_marker.encode() if fail_marker else None
        self.shutdown_timeout = shutdown_timeout
        self.name = name
        self.ssh_port = ssh_port  # the host side of the SSH forward, if argv has one
        self.env = dict(env or {})  # added to lab's environment (lab's own QEMU: its module directory)
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_line = ""
        self.launched_at = 0.0
        self.ready_at = 0.0
        self._shutdown_lock = threading.Lock()

    def __enter__(self) -> VM:
        self.launch()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.shutdown()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        """QEMU's exit status once it has exited (negative: killed by that signal), else None.

        Read without reaping (``WNOWAIT``): until :meth:`shutdown` reaps it, the zombie's pid keeps naming its
        process group, so the group kill can never hit a group that reused the number."""
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is not None:
            return proc.returncode
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped elsewhere
            return proc.poll()
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def check_alive(self, what: str = "before the guest was ready") -> None:
        """Raise :class:`BootError` (exit status, QEMU's stderr, console tail) if QEMU has exited; a cancelled run
        raises :class:`~lab.deadline.Cancelled` first (its QEMU is killed under it: no verdict on the guest)."""
        check()
        rc = self.returncode
        if rc is not None:
            said = tail(self.stderr_log, 1)  # QEMU's own last word ("load of migration failed: ...", "Could not open ...")
            raise self._boot_error(
                f"QEMU exited with status {rc} {what}" + (f": {said}" if said else ""), f"see {self.stderr_log} and {self.console_log}"
            )

    def launch(self) -> None:
        if self.proc is not None:
            raise RuntimeError("VM.launch() called twice")
        check()  # a cancelled run starts no new guest
        self.console_log.parent.mkdir(parents=True, exist_ok=True)
        self.console_log.write_bytes(b"")
        log.debug("launching %s: %s", self.name, shlex.join(self.argv))
        for tool, package in (
            (self.argv[0], "the host's QEMU packages, or set qemu.from (lab.yaml)"),
            (PDEATHSIG_WRAPPER[0], "util-linux"),
        ):
            if shutil.which(tool) is None:
                raise InfraError(f"{tool} not found", f"install {package} or run lab doctor")
        with open(self.stderr_log, "wb") as err:
            self.proc = subprocess.Popen(
                launch_argv(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,
                env={**os.environ, **self.env} if self.env else None,
            )
        self.launched_at = time.monotonic()
        with _live_lock:
            _live.add(self)

    def _boot_error(self, what: str, remedy: str) -> BootError:
        rc = self.returncode
        details = [f"command: {shlex.join(self.argv)}"]
        if rc is not None:
            details.append(f"exit status: {rc}")
        stderr = tail(self.stderr_log, 5)
        if stderr:
            details.append("qemu stderr:\n" + stderr)
        console = tail(self.console_log)
        details.append("console tail:\n" + (console or "(empty)"))
        return BootError(f"{self.name}: {what}", remedy, logs=(self.console_log, self.stderr_log), details="\n".join(details))

    def wait_ready(self, deadline: Deadline) -> str:
        """Block until the ready marker is on the console; raise BootError if QEMU dies or time runs out."""
        if self.proc is None:
            raise RuntimeError("VM.wait_ready() before launch()")
        offset = 0
        buf = b""
        while True:
            with open(self.console_log, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            buf = (buf + chunk)[-65536:]
            if self.fail_marker and self.fail_marker in buf:
                reason = buf[buf.index(self.fail_marker) :].split(b"\n")[0].decode(errors="replace").strip()
                raise self._boot_error(f"guest init failed: {reason}", f"see the console log {self.console_log}")
            if self.ready_marker in buf:
                rest = buf[buf.index(self.ready_marker) :]
                if b"\n" in rest:  # the whole line has been written
                    self.ready_line = rest.split(b"\n")[0].decode(errors="replace").strip()
                    self.ready_at = time.monotonic()
                    return self.ready_line
            self.check_alive()
            if deadline.expired:
                raise self._boot_error(
                    f"guest not ready after {deadline.seconds:.0f}s",
                    f"see the console log {self.console_log}; on a slow host raise timeouts.multiplier",
                )
            deadline.pause(POLL)

    def _exited(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for QEMU to exit, without reaping it."""
        end = time.monotonic() + seconds
        while self.returncode is None:
            if time.monotonic() >= end:
                return False
            time.sleep(POLL)  # cleanup is never cancelled: it is what a cancellation runs
        return True

    def shutdown(self) -> None:
        """Polite (SIGTERM), then forced (SIGKILL to the process group). Idempotent; never raises for a dead QEMU.

        The group is killed while the leader is still unreaped (a zombie at worst), so its id cannot have been
        reused; every wait is bounded (a QEMU that outlives SIGKILL, stuck in the kernel, is logged and left)."""
        with self._shutdown_lock:  # the runner's shutdown_all and the owner's ExitStack may both call this
            self._shutdown()

    def _shutdown(self) -> None:
        proc = self.proc
        if proc is None:
            return
        try:
            if self.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)  # not Popen.send_signal: its poll() would reap the leader
                if not self._exited(self.shutdown_timeout):
                    log.warning("%s: QEMU ignored SIGTERM for %.1fs; killing it", self.name, self.shutdown_timeout)
        finally:
            if proc.returncode is None:  # not reaped yet: the pid still names the group
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)  # the group: QEMU and anything it forked (zstd)
            try:
                proc.wait(timeout=self.shutdown_timeout)
            except subprocess.TimeoutExpired:
                log.error("%s: QEMU (pid %d) survived SIGKILL for %.1fs (stuck in the kernel?)", self.name, proc.pid, self.shutdown_timeout)
            else:
                with _live_lock:
                    _live.discard(self)
