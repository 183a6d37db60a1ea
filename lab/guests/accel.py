"""Accelerator choice: KVM only where it is proven to work, TCG otherwise.

``auto`` tries KVM when the host can run the guest natively and ``/dev/kvm``
is usable, and falls back to TCG (with one warning) when that boot fails. A
failed KVM boot is remembered per host kernel, QEMU binary and image in
``<cache>/accel.json`` so later boots do not pay for it again; ``lab doctor``
re-checks it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

from lab.arches import Arch, host, host_can_kvm
from lab.errors import UserError
from lab.files import write_atomic
from lab.guests.emulator import HOST, Emulator

KVM_DEVICE = Path("/dev/kvm")


@dataclass(frozen=True)
class Plan:
    """Accelerators to try in order, and why KVM is or is not among them."""

    accels: tuple[str, ...]
    note: str


def kvm_precheck(arch: Arch, device: Path = KVM_DEVICE, machine: str | None = None) -> str | None:
    """Why KVM cannot even be tried for ``arch`` here, or None if it can."""
    if not host_can_kvm(arch, machine):
        return f"host is {machine or platform.machine()}, guest is {arch.name}"
    if not device.exists():
        return f"{device} does not exist"
    if not os.access(device, os.R_OK | os.W_OK):
        return f"{device} is not read/writable by this user"
    return None


class KvmMemo:
    """Remembered KVM boot failures, keyed by host kernel, QEMU binary and image."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def key(arch: Arch, image_key: str, emulator: Emulator = HOST) -> str:
        """The same binary that boots the guest: the host's in PATH, or lab's own QEMU's."""
        binary = shutil.which(emulator.binary(arch)) or emulator.binary(arch)
        stamp = int(os.stat(binary).st_mtime) if os.path.exists(binary) else 0
        return f"{platform.release()}|{binary}@{stamp}|{image_key[:16]}"

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def broken(self, key: str) -> str | None:
        return self._load().get(key)

    def record(self, key: str, reason: str | None) -> None:
        data = self._load()
        if reason is None:
            data.pop(key, None)
        else:
            data[key] = reason
        write_atomic(self.path, json.dumps(data, indent=2) + "\n")


def plan(choice: str, arch: Arch, memo_reason: str | None, precheck: str | None) -> Plan:
    """Pure decision: which accelerators to try for ``choice`` (auto|kvm|tcg)."""
    if choice == "tcg":
        return Plan(("tcg",), "TCG (forced)")
    if choice == "kvm":
        if precheck:
            raise UserError(f"--accel kvm is impossible for {arch.name}: {precheck}", "use --accel auto or tcg")
        return Plan(("kvm",), "KVM (forced)")
    if precheck:
        return Plan(("tcg",), f"TCG ({precheck})")
    if memo_reason:
        return Plan(("tcg",), f"TCG (KVM failed here before: {memo_reason}; lab doctor re-checks)")
    return Plan(("kvm", "tcg"), "KVM if it boots, else TCG")


def host_cpu(accel: str) -> str:
    """This host's CPU model for a KVM cell (a TCG cell runs the same on any CPU: "")."""
    if accel != "kvm":
        return ""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    facts: dict[str, str] = {}  # the first CPU's value of each key
    for key, _, value in (line.partition(":") for line in info.splitlines()):
        facts.setdefault(key.strip(), value.strip())
    row = host()
    for key in row.cpuinfo_keys if row else ("model name",):  # the host arch's row names its keys
        if key in facts:
            return facts[key]
    return " ".join(f"{k} {facts[k]}" for k in ("CPU implementer", "CPU part", "CPU variant") if k in facts) or platform.machine()
