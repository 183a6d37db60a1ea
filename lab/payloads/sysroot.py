"""Sysroots: the guest suite's own libc development files, per arch, so every variant is built against the
libc the guest runs (never the host's cross libc).

A sysroot is the union of the packages the variant table's toolchains name
(``Toolchain.sysroot_packages``; ``libgcc-{gcc}-dev`` follows the suite's
default gcc) for one (suite, arch), downloaded through lab's private apt and
unpacked into a content-addressed cache entry ``<cache>/sysroots/<arch>-<suite>-<key>/``
with merged-usr links and ``sysroot.json`` (package names, versions, SHA256).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.arches import Arch
from lab.cache import BuildCache, read_record
from lab.config import Config
from lab.errors import CacheError, ImageError
from lab.files import sha256_text
from lab.guests.apt import Package
from lab.guests.images import ImageStore
from lab.guests.initramfs import deb_tar
from lab.payloads.variants import libc_packages, toolchains

log = logging.getLogger(__name__)
BUILDER_VERSION = "2"  # 2: absolute symlinks point inside the sysroot
MUST_EXIST = ("usr/include/stdio.h",)
# Extraction filters exist from Python 3.11.4 (Debian 12 ships 3.11.2): use "tar" (no device files, no
# setuid bits) where it is there; the member checks below hold either way.
_FILTER: dict[str, Any] = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}


def upstream(version: str) -> str:
    """A Debian version's upstream part: ``2.41-12+deb13u5`` -> ``2.41``, ``1:2.3-1`` -> ``2.3``."""
    return re.sub(r"-[^-]*$", "", version.split(":", 1)[-1])


@dataclass(frozen=True)
class Sysroot:
    arch: Arch
    suite: str
    key: str
    dir: Path
    packages: dict[str, str]  # name -> Debian version
    gcc_lib: Path  # usr/lib/gcc/<triplet>/<major>: crt files and libgcc.a

    def libc_version(self, libc: str) -> str:
        """The upstream version of the libc package the toolchains of ``libc`` link against."""
        return upstream(self.packages.get(libc_packages().get(libc, libc), ""))

    def facts(self) -> dict[str, Any]:
        return {"suite": self.suite, "key": self.key, "packages": dict(sorted(self.packages.items()))}


def package_names(gcc_major: str) -> list[str]:
    """Every package the table's toolchains need in a sysroot, in table order."""
    names = [n.format(gcc=gcc_major) for tc in toolchains() for n in tc.sysroot_packages]
    return list(dict.fromkeys(names))


class SysrootStore:
    """Sysroots of the guests of ``images`` (each arch's suite: the store's, or the one the arch takes instead),
    under ``<cache>/sysroots``, built once per (arch, suite, package versions)."""

    def __init__(self, cfg: Config, images: ImageStore | None = None) -> None:
        self.cfg = cfg
        self.images = images or ImageStore(cfg)
        self.cache = BuildCache(cfg.cache_dir / "sysroots", cfg.timeouts.scaled("lock"), "sysroot")

    def suite(self, arch: Arch) -> str:
        return self.images.spec(arch).suite

    def _resolve(self, arch: Arch) -> list[Package]:
        apt = self.images.apt_for(self.suite(arch))
        with self.images.apt_lock():
            apt.update(self.cfg.apt.refresh_hours)
            [gcc] = apt.resolve(["gcc"], arch.debian)
            major = upstream(gcc.version).split(".")[0]
            return apt.resolve(package_names(major), arch.debian)

    def ensure(self, arch: Arch) -> Sysroot:
        packages, suite = self._resolve(arch), self.suite(arch)
        key = sha256_text(BUILDER_VERSION, suite, arch.name, *(f"{p.name} {p.version} {p.sha256}" for p in packages))
        entry = self.cache.ensure(f"{arch.name}-{suite}-{key[:16]}", lambda work: self._build(arch, key, packages, work), verify)
        record = read_record(entry.path / "sysroot.json", "lab payloads build rebuilds it")
        versions = {p["name"]: p["version"] for p in record["packages"]}
        return Sysroot(arch, suite, key, entry.path, versions, entry.path / record["gcc_lib"])

    def _build(self, arch: Arch, key: str, packages: list[Package], work: Path) -> None:
        debs = self.images.apt_for(self.suite(arch)).download(packages, self.cfg.cache_dir / "debs")
        for p in packages:
            with deb_tar(debs[p.name]) as tar:
                for member in tar:
                    if member.isdev() or member.name.startswith(("/", "..")) or "/../" in member.name:
                        continue
                    tar.extract(member, work, **_FILTER)
        for link, target in (("lib", "usr/lib"), ("lib64", "usr/lib64"), ("bin", "usr/bin")):
            if (work / target).is_dir() and not (work / link).exists():
                os.symlink(target, work / link)
        _contain_links(work)
        # usr/lib/gcc/<gcc's triplet>/<major>: gcc's triplet is not always the multiarch one (i386's is i686-linux-gnu)
        gcc_dirs = sorted((work / "usr/lib/gcc").glob("*/*/libgcc.a"))
        if not gcc_dirs:
            raise ImageError(f"{arch.name} sysroot has no libgcc.a for {arch.triplet}", "check the suite's libgcc-*-dev package")
        record = {
            "schema": 1,
            "suite": self.suite(arch),
            "arch": arch.name,
            "key": key,
            "packages": [{"name": p.name, "version": p.version, "arch": p.arch, "sha256": p.sha256} for p in packages],
            "gcc_lib": str(gcc_dirs[-1].parent.relative_to(work)),
        }
        (work / "sysroot.json").write_text(json.dumps(record, indent=2) + "\n")
        log.info("built the %s %s sysroot (%d packages)", self.suite(arch), arch.name, len(packages))


def _contain_links(root: Path) -> None:
    """Absolute symlinks (``libm.so -> /lib/...``) would lead a linker into the host's own libc: point them inside."""
    for path in root.rglob("*"):
        if path.is_symlink() and os.readlink(path).startswith("/"):
            target = root / os.readlink(path).lstrip("/")
            path.unlink()
            os.symlink(os.path.relpath(target, path.parent), path)


def verify(d: Path) -> str | None:
    try:
        record = read_record(d / "sysroot.json", "lab payloads build rebuilds it")
    except CacheError as exc:
        return exc.message
    for rel in (*MUST_EXIST, f"{record.get('gcc_lib')}/libgcc.a"):
        if not (d / rel).exists():
            return f"{rel} is missing"
    return None
