"""Snapshots of booted guests: a TCG guest that has booted once is saved, and later boots restore it.

A TCG boot takes seconds; restoring the saved state of a guest that has just
reached its ready marker takes a fraction of one. A snapshot is QEMU's
migration stream (``stop``, ``migrate`` to ``exec:zstd -1 -q > FILE``; this
QEMU refuses ``file:`` URIs), saved before any SSH session exists and before
the scratch disk is mounted (``lab.guests.boot`` mounts it after every boot,
so the disk is always in the state the guest believes it is in).

A snapshot is valid only for the exact QEMU build, machine arguments, memory,
kernel, initramfs and scratch disk: its key hashes QEMU's version line, the
QEMU command line with the per-boot parts (ports, log and socket paths, the
image's file paths) replaced by placeholders, and the image key (which hashes
the kernel and initramfs contents). Entries live in
``<cache>/snapshots/<arch>-<key>/`` (0700, the state file 0600: it holds the
guest's memory, host key included), are written to a temp name and renamed,
and are discarded when a restore fails (the caller then boots cold, once).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from lab.deadline import Deadline
from lab.errors import BootError
from lab.files import sha256_text, write_atomic
from lab.guests import emulator, qemu
from lab.guests.qmp import QMP

log = logging.getLogger(__name__)

VERSION = "1"  # bump when what a snapshot holds changes for equal inputs
STATE = "state.zst"
META = "snapshot.json"


def key(spec: qemu.VMSpec, image_key: str) -> str:
    """The content address of a snapshot of ``spec``'s guest: QEMU build, machine arguments, image."""
    placeholder = Path("/@")
    normal = replace(
        spec,
        ssh_port=1,
        console_log=placeholder,
        kernel=placeholder,
        initrd=placeholder,
        scratch=placeholder if spec.scratch else None,
        qmp=placeholder,
        incoming=None,
        tb_size_mib=None,  # the translation cache size does not shape the guest's state
    )
    return sha256_text(VERSION, emulator.version(spec.emulator, spec.arch), "\0".join(qemu.qemu_argv(normal)), image_key)


@dataclass(frozen=True)
class Snapshot:
    dir: Path
    key: str

    @property
    def state(self) -> Path:
        return self.dir / STATE


def _resume(qmp: QMP) -> None:
    """After a failed save: cancel the migration and let the guest run on (a short deadline; errors ignored)."""
    for command in ("migrate_cancel", "cont"):
        with contextlib.suppress(BootError):
            qmp.command(command, Deadline(5))


class SnapshotStore:
    def __init__(self, cache_dir: Path) -> None:
        self.root = cache_dir / "snapshots"

    def _dir(self, arch: str, k: str) -> Path:
        return self.root / f"{arch}-{k[:16]}"

    def find(self, arch: str, k: str) -> Snapshot | None:
        """The saved snapshot for (arch, key), if one is complete and private."""
        d = self._dir(arch, k)
        try:
            meta = json.loads((d / META).read_text())
            st = (d / STATE).stat()
        except (OSError, ValueError):
            return None
        if meta.get("key") != k or st.st_size == 0 or st.st_mode & 0o077:
            return None
        return Snapshot(d, k)

    def save(self, qmp: QMP, arch: str, k: str, image_key: str, deadline: Deadline) -> Snapshot:
        """Pause the guest, write its state, resume it. BootError (and nothing kept) on any failure."""
        work = self.root / f".{arch}-{k[:16]}-{os.getpid()}"  # the pid marks a live saver (prune spares it)
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(mode=0o700)
        except OSError as exc:
            raise BootError(f"saving the {arch} guest failed: {exc.strerror or exc} ({exc.filename})", "check paths.cache") from None
        started = time.monotonic()
        try:
            qmp.command("stop", deadline)
            qmp.command("migrate", deadline, uri=f"exec:zstd -1 -q > {shlex.quote(str(work / STATE))}")
            while True:
                info = qmp.command("query-migrate", deadline)
                status = info.get("status") if isinstance(info, dict) else None
                if status == "completed":
                    break
                if status in ("failed", "cancelled") or deadline.expired:
                    raise BootError(f"saving the {arch} guest failed: {_why(info, status, work)}", "see QEMU's stderr log")
                deadline.pause(0.02)
            qmp.command("cont", deadline)
            qmp.wait_status({"running"}, deadline)
            (work / STATE).chmod(0o600)
            size = (work / STATE).stat().st_size
            write_atomic(
                work / META, json.dumps({"key": k, "arch": arch, "image": image_key, "bytes": size, "saved": time.time()}) + "\n", 0o600
            )
            final = self._dir(arch, k)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(work, final)
        except OSError as exc:  # disk full, a rename race: a snapshot not saved, never a run aborted
            shutil.rmtree(work, ignore_errors=True)
            _resume(qmp)
            raise BootError(
                f"saving the {arch} guest failed: {exc.strerror or exc} ({exc.filename or self.root})", "free space in the cache"
            ) from None
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            _resume(qmp)
            raise
        log.info("%s: saved a snapshot of the booted guest (%.1f MB in %.2fs)", arch, size / 1e6, time.monotonic() - started)
        return Snapshot(final, k)

    def discard(self, snap: Snapshot) -> None:
        shutil.rmtree(snap.dir, ignore_errors=True)

    def prune(self, keep_keys: set[str]) -> list[Path]:
        """Delete every snapshot whose key is not in ``keep_keys`` (other images, QEMU builds, kernel arguments,
        memory sizes) and abandoned temp dirs; a live saver's temp dir is spared."""
        doomed = []
        if self.root.is_dir():
            for d in self.root.iterdir():
                if d.name.startswith("."):
                    if _saver_alive(d.name):
                        continue
                else:
                    try:
                        k = json.loads((d / META).read_text()).get("key", "")
                    except (OSError, ValueError):
                        k = ""
                    if k in keep_keys:
                        continue
                shutil.rmtree(d, ignore_errors=True)
                doomed.append(d)
        return doomed


def _saver_alive(name: str) -> bool:
    """Whether the process named by a temp dir's ``-PID`` suffix is alive."""
    pid = name.rsplit("-", 1)[-1]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _why(info: object, status: str | None, work: Path) -> str:
    """Why a save failed, in words: QEMU's own reason, and a full disk named as such."""
    desc = info.get("error-desc") if isinstance(info, dict) else None
    why = f"migration {status or 'timed out'}" + (f": {desc}" if desc else "")
    with contextlib.suppress(OSError):
        if shutil.disk_usage(work).free < 64 * 2**20:
            why += f" (no space left: {shutil.disk_usage(work).free // 2**20} MiB free in {work.parent})"
    return why
