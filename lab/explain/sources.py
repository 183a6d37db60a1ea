"""The guest's files on the host: the image's own initramfs, what lab uploaded, and the suite's debug symbols.

Fault attribution reads the very bytes the guest mapped: libraries and
programs come out of the image's ``initrd.cpio`` (symlinks resolved the way the
guest's kernel resolves them), uploaded binaries from where lab uploaded them
from. Function names for stripped glibc objects come from the suite's
``libc6-dbg`` (detached debug files by build ID), fetched through lab's private
apt once and cached; an object whose build ID has no debug file keeps its own
symbol table.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from lab.cache import BuildCache
from lab.errors import LabError
from lab.explain.objects import ElfObject, debug_build_id, is_elf, load
from lab.guests.apt import Apt
from lab.guests.initramfs import Entry, Tree, deb_tar, read_cpio

log = logging.getLogger(__name__)

DEBUG_PACKAGES = ("libc6-dbg",)
DEBUG_DIR = "usr/lib/debug"  # in the main archive of every suite (the -dbgsym archive is not reachable)


def _tree(initrd: Path) -> Tree:
    tree = Tree()
    for path, (mode, data) in read_cpio(initrd.read_bytes()).items():
        tree.entries[path] = Entry(mode, data)
    return tree


class GuestFiles:
    """Read-only view of one guest's files; ``uploads`` maps guest paths to host files lab put there."""

    def __init__(self, initrd: Path, uploads: Mapping[str, Path] = {}, debug_dir: Path | None = None) -> None:
        self.initrd = initrd
        self.uploads = dict(uploads)
        self.debug_dir = debug_dir
        self._t: Tree | None = None
        self._objects: dict[str, ElfObject | None] = {}

    @property
    def tree(self) -> Tree:
        if self._t is None:
            self._t = _tree(self.initrd)
        return self._t

    def realpath(self, path: str) -> str:
        if path in self.uploads:
            return path
        real = self.tree.resolve(path)
        return "/" + real if real is not None else path

    def read(self, path: str) -> bytes | None:
        if path in self.uploads:
            return self.uploads[path].read_bytes()
        try:
            return self.tree.read(path)
        except KeyError:
            return None

    def exists(self, path: str) -> bool:
        return path in self.uploads or self.tree.exists(path)

    def _debug(self, data: bytes) -> bytes | None:
        bid = debug_build_id(data)
        if not bid or self.debug_dir is None:
            return None
        f = self.debug_dir / ".build-id" / bid[:2] / f"{bid[2:]}.debug"
        return f.read_bytes() if f.is_file() else None

    def load(self, path: str) -> ElfObject | None:
        """The ELF object at ``path`` (None: missing or not ELF)."""
        if path not in self._objects:
            data = self.read(path)
            self._objects[path] = load(path, data, self._debug(data)) if data and is_elf(data) else None
        return self._objects[path]


def debug_symbols(apt: Apt, arch_debian: str, cache_dir: Path, lock_seconds: float) -> Path | None:
    """The suite's detached debug files for ``arch_debian`` (``usr/lib/debug`` of :data:`DEBUG_PACKAGES`), a cache
    entry under ``<cache>/debug/`` (lab.cache's discipline: one builder, temp dir, rename, verify on reuse).

    None (with a warning) when they cannot be had: names then come from the objects' own symbol tables.
    """
    try:
        packages = apt.resolve(DEBUG_PACKAGES, arch_debian)
        name = f"{apt.suite}-{arch_debian}-" + "-".join(f"{p.name}_{p.version}" for p in packages).replace(":", "%")
        cache = BuildCache(cache_dir / "debug", lock_seconds, "debug symbols")
        entry = cache.ensure(name, lambda work: _extract_debug(apt.download(packages, cache_dir / "debs").values(), work), _verify_debug)
    except LabError as exc:
        log.warning("no debug symbols for %s %s (%s): function names from symbol tables only", apt.suite, arch_debian, exc.message)
        return None
    return entry.path / DEBUG_DIR


def _extract_debug(debs: Iterable[Path], work: Path) -> None:
    for deb in debs:
        with deb_tar(deb) as tar:
            for member in tar:
                name = os.path.normpath(member.name.lstrip("./"))
                src = tar.extractfile(member) if name.startswith(f"{DEBUG_DIR}/") and member.isfile() else None
                if src is not None:
                    dest = work / name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(src.read())


def _verify_debug(d: Path) -> str | None:
    return None if (d / DEBUG_DIR).is_dir() else f"{DEBUG_DIR} is missing"
