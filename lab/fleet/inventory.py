"""A fleet's hosts, read through Ansible's own inventory parser, and which host runs which arch.

Every lab host is in the inventory group ``lab_hosts`` (directly or through child groups). A host's
``lab_arches`` variable lists the arches it may run (default: all); membership of ``kvm_<arch>`` says it
runs that arch under KVM, which :func:`assign` prefers.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import arches
from lab.errors import InfraError, UserError
from lab.fleet import ansible

GROUP = "lab_hosts"


@dataclass(frozen=True)
class FleetHost:
    name: str
    arches: tuple[str, ...]  # what it may run (lab_arches), in the arch table's order
    kvm: tuple[str, ...]  # what it runs under KVM (groups kvm_<arch>)


def _members(data: dict[str, Any], group: str, seen: set[str] | None = None) -> list[str]:
    """Hosts of ``group`` and its child groups, in inventory order."""
    seen = seen if seen is not None else set()
    if group in seen:
        return []
    seen.add(group)
    entry = data.get(group, {})
    out = list(entry.get("hosts", []))
    for child in entry.get("children", []):
        out += [h for h in _members(data, child, seen) if h not in out]
    return out


def parse(inventory: Path, data: dict[str, Any]) -> list[FleetHost]:
    """The fleet in ``ansible-inventory --list`` output; bad arch names are usage errors naming host and value."""
    names = _members(data, GROUP)
    if not names:
        raise UserError(
            f"{inventory}: no hosts in the group {GROUP}", f"put every lab host under {GROUP} (see ansible/inventory.example.yml)"
        )
    hostvars = data.get("_meta", {}).get("hostvars", {})
    hosts = []
    for name in names:
        given = hostvars.get(name, {}).get("lab_arches", arches.names())
        if isinstance(given, str):
            given = given.split(",")
        if not isinstance(given, list) or not given:
            raise UserError(f"{inventory}: {name}: lab_arches: {given!r} is not valid", "a list of arches, e.g. [x86_64, riscv64]")
        try:
            own = {arches.get(str(a)).name for a in given}
        except UserError as exc:
            raise UserError(f"{inventory}: {name}: lab_arches: {exc.message}", exc.remedy) from None
        kvm = {a for a in arches.names() if name in _members(data, f"kvm_{a}")}
        hosts.append(FleetHost(name, tuple(a for a in arches.names() if a in own), tuple(a for a in arches.names() if a in kvm)))
    return hosts


def load(inventory: Path) -> list[FleetHost]:
    if not inventory.exists():
        raise UserError(f"{inventory}: no such inventory", "give an Ansible inventory file (see ansible/inventory.example.yml)")
    argv = ansible.inventory_argv(inventory)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=ansible.environment(), timeout=120)
    except FileNotFoundError:
        raise InfraError(f"{argv[0]} not found", "pip install ansible-core (./setup.sh does)") from None
    except subprocess.TimeoutExpired:
        raise InfraError(f"ansible-inventory did not read {inventory} within 120s", "check the inventory's plugins and scripts") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UserError(
            f"{inventory}: Ansible cannot read this inventory: {last}", "fix the inventory (ansible-inventory -i INV --list shows it)"
        )
    try:
        return parse(inventory, json.loads(proc.stdout))
    except UserError as exc:  # Ansible reads a file it cannot parse as an empty inventory, with a warning
        said = [ln.strip() for ln in proc.stderr.splitlines() if "WARNING" in ln]
        if said and "no hosts" in exc.message:
            raise UserError(f"{exc.message} (Ansible: {said[0][:200]})", exc.remedy) from None
        raise


def assign(hosts: list[FleetHost], wanted: list[str], inventory: Path) -> dict[str, tuple[str, ...]]:
    """host -> the arches it runs: each arch on one host that may run it, KVM hosts for that arch first, then the
    host with the fewest arches so far (inventory order breaks ties)."""
    load_: dict[str, list[str]] = {h.name: [] for h in hosts}
    for arch in wanted:
        able = [h for h in hosts if arch in h.arches]
        if not able:
            raise UserError(f"{inventory}: no host in {GROUP} runs {arch}", f"add {arch} to a host's lab_arches")
        best = min(able, key=lambda h: (arch not in h.kvm, len(load_[h.name]), hosts.index(h)))
        load_[best.name].append(arch)
    return {name: tuple(a) for name, a in load_.items() if a}
