"""Which libc a cell really ran: the run-time version where the probe cannot say it, and the truth check.

glibc reports its run-time version itself (``gnu_get_libc_version``). musl
cannot: a dynamic musl cell runs the guest's ``/lib/ld-musl-<arch>.so.1``, which
prints its version when run directly; a static one carries the version it was
built with. A cell is one libc when its build and run versions agree and equal
the image's libc package; anything else is flagged (``lab run`` warns, the
report marks it).
"""

from __future__ import annotations

import re
from typing import Any

from lab.guests.ssh import Guest
from lab.payloads.sysroot import upstream
from lab.payloads.variants import Variant, libc_packages


def guest_musl_version(guest: Guest) -> str | None:
    """The guest's dynamic musl version, from its loader (None when the image has no musl loader)."""
    out = guest.run('for f in /lib/ld-musl-*.so.1; do [ -e "$f" ] && "$f" 2>&1; done; true').stdout
    m = re.search(r"^Version (\S+)", out, re.MULTILINE)
    return m.group(1) if m else None


def run_version(v: Variant, reported: str | None, build: str, guest_musl: str | None) -> str | None:
    """The libc version a cell ran: what the probe reported, else (musl) the guest loader's or the built-in one."""
    if reported:
        return reported
    if v.libc == "musl":
        return guest_musl if v.linkage == "dynamic" else build
    return None


def image_versions(manifest: dict[str, Any]) -> dict[str, str]:
    """libc -> upstream version of the image's package for it."""
    by_name = {p["name"]: p["version"] for p in manifest.get("packages", [])}
    return {libc: upstream(by_name[pkg]) for libc, pkg in libc_packages().items() if pkg in by_name}


def mismatch(libc: str, build: str, run: str | None, image: dict[str, str]) -> str | None:
    """Why a cell is not one libc (None when build == run == the image's package)."""
    want = image.get(libc)
    if run is None or build != run or (want is not None and build != want):
        return f"{libc} built against {build}, ran {run or 'unknown'}, image ships {want or 'none'}"
    return None
