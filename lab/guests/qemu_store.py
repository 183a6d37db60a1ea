"""Lab's own QEMU: a Debian suite's QEMU packages and their whole dependency closure, unpacked into one cache entry.

For ``qemu.from: SUITE`` lab resolves, for the host's own Debian architecture,
every arch's ``qemu-system-*`` package (``Arch.qemu_packages``) and firmware
package (``Arch.bios_package``) plus everything they depend on, with its private
apt (a backports suite on top of its base), downloads them into the .deb pool and
unpacks them with ``dpkg-deb -x`` into a content-addressed entry under the one
cache discipline (``lab.cache``). Nothing is installed on the host. Before the
entry is kept, each binary must run through the entry's loader with every
library resolved inside the entry, print its version and offer the machine its
arch needs. The entry's record lists every file's size and mtime; a truncated
or edited entry is rebuilt (healed).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from lab import axes
from lab.arches import ARCHES, Arch, host
from lab.cache import BuildCache, read_record
from lab.config import Config
from lab.errors import CacheError, ImageError, UserError
from lab.files import sha256_text, write_atomic
from lab.guests.apt import Apt, Package
from lab.guests.elf import _elf, interpreter
from lab.guests.emulator import HOST, Emulator

log = logging.getLogger(__name__)

ENTRY_VERSION = "2"  # bump when an entry's layout or record changes
RECORD = "emulator.json"
DROPPED = ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/lintian")  # nothing QEMU reads


def host_arch() -> Arch:
    found = host()
    if found is None:
        raise UserError(
            f"qemu.from: lab cannot run a suite's QEMU on a {platform.machine()} host", "use qemu.from: host (the host's own QEMU)"
        )
    return found


def suite_apt(cfg: Config, origin: str) -> Apt:
    """The private apt of ``origin``'s QEMU for this host's architecture (a backports suite over its base)."""
    suite = axes.suite(origin, guests=False)
    return Apt(cfg.cache_dir / "apt" / f"qemu-{origin}", origin, ("main",), (host_arch().debian,), cfg.apt.mirror, suite.base)


def wanted(apt: Apt, pin: str) -> list[str]:
    """Every arch's QEMU package (the first name the suite has; pinned to ``pin`` if given) and firmware package."""
    have = apt.names("")  # every package name in the suite's lists: one apt-cache call, whatever the rows name
    names: list[str] = []
    for arch in ARCHES:
        pkg = next((p for p in arch.qemu_packages if p in have), None)
        if pkg is None:
            raise UserError(
                f"qemu.from: {apt.suite} has no {' or '.join(arch.qemu_packages)} for {apt.arches[0]} (QEMU for {arch.name})",
                "pick another suite for qemu.from, or qemu.from: host",
            )
        names.append(f"{pkg}={pin}" if pin else pkg)
        if arch.bios_package and arch.bios_package not in names:
            names.append(arch.bios_package)
    return list(dict.fromkeys(names))


def _files(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            yield Path(dirpath) / f


def _stat_record(root: Path) -> dict[str, list[int]]:
    """Every regular file's size and mtime (ns), by path relative to root (symlinks are left as dpkg made them)."""
    out = {}
    for path in _files(root):
        if not path.is_symlink():
            st = path.stat()
            out[str(path.relative_to(root))] = [st.st_size, st.st_mtime_ns]
    return out


def _inside(root: Path, rel: str) -> Path | None:
    """``rel`` resolved inside ``root`` (absolute symlink targets re-rooted), or None if it is not there."""
    path = root / rel.lstrip("/")
    for _ in range(40):
        if path.is_symlink():
            target = os.readlink(path)
            path = (root / target.lstrip("/")) if target.startswith("/") else (path.parent / target)
            continue
        return path if path.exists() else None
    return None


def _emulator(root: Path, record: dict[str, object]) -> Emulator:
    fields = {k: record[k] for k in ("origin", "package_version", "loader", "module_dir")}
    return Emulator(
        root=root,
        library_path=tuple(record["library_path"]),  # type: ignore[arg-type]
        data_dirs=tuple(record["data_dirs"]),  # type: ignore[arg-type]
        **fields,  # type: ignore[arg-type]
    )


def _run(e: Emulator, argv: list[str], what: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={**os.environ, **e.env()}, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImageError(
            f"{e.describe()}: {what} does not run ({exc})", "lab rebuilds the entry next time; report it if it persists"
        ) from None
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ImageError(f"{e.describe()}: {what} failed (exit {proc.returncode}): {said[0]}", "pick another suite for qemu.from, or host")
    return proc.stdout


def _prove(e: Emulator) -> None:
    """Each binary runs through the entry's loader, resolves every library inside the entry, names its version and
    offers its arch's machine; otherwise nothing is kept."""
    assert e.root is not None
    for arch in {a.qemu_binary + " " + a.machine: a for a in ARCHES}.values():
        loader, _, libs, binary = e.command(arch)
        listed = _run(e, [loader, "--library-path", libs, "--list", binary], f"ld.so --list {arch.qemu_binary}")
        outside = [ln.split("=>")[-1].split("(")[0].strip() for ln in listed.splitlines() if "=>" in ln]
        foreign = [p for p in outside if p and not p.startswith(str(e.root))]
        if foreign:
            raise ImageError(
                f"{e.describe()}: {arch.qemu_binary} would load {foreign[0]} from the host", "report it: the closure misses it"
            )
        first = _run(e, [*e.command(arch), "--version"], f"{arch.qemu_binary} --version").splitlines()[:1]
        if not first or "version" not in first[0]:
            raise ImageError(f"{e.describe()}: {arch.qemu_binary} --version printed no version", "pick another suite for qemu.from")
        machines = _run(e, [*e.command(arch), "-machine", "help"], f"{arch.qemu_binary} -machine help").split()
        if arch.machine.split(",")[0] not in machines:
            raise ImageError(f"{e.describe()}: {arch.qemu_binary} has no machine {arch.machine!r}", "pick another suite for qemu.from")
        if arch.bios and not Path(e.bios(arch) or "").is_file():
            raise ImageError(f"{e.describe()}: {arch.bios_package} has no {arch.bios}", "pick another suite for qemu.from")


def _build(work: Path, origin: str, package_version: str, packages: list[Package], debs: dict[str, Path], triplet: str) -> None:
    root = work / "root"
    root.mkdir()

    def unpack(deb: Path) -> None:
        done = subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ImageError(f"dpkg-deb -x {deb.name} failed: {done.stderr.strip()[-200:]}", "run again; lab downloads it anew")

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="lab-unpack") as pool:
        list(pool.map(unpack, debs.values()))
    for d in DROPPED:
        shutil.rmtree(root / d, ignore_errors=True)
    elf = _elf((root / "usr/bin" / ARCHES[0].qemu_binary).read_bytes())
    interp = interpreter(elf) if elf else None
    loader = (_inside(root, interp) or _inside(root, "usr" + interp)) if interp else None
    if loader is None:
        raise ImageError(f"{origin}: the QEMU packages' loader {interp} is not in their closure", "report it")
    module_dir = f"usr/lib/{triplet}/qemu"
    lib_dirs = sorted(
        {str(p.parent.relative_to(root)) for p in _files(root) if re.search(r"\.so(\.|$)", p.name) and p.parent != root / module_dir}
        - {f"usr/lib/{triplet}/gconv", f"usr/lib/{triplet}/security"}
    )
    record: dict[str, object] = {
        "version": ENTRY_VERSION,
        "origin": origin,
        "package_version": package_version,
        "loader": str(loader.resolve().relative_to(root.resolve())),
        "library_path": lib_dirs,
        "module_dir": module_dir,
        "data_dirs": [],
        "packages": [asdict(p) for p in packages],
    }
    e = _emulator(root, record)
    listed = _run(e, [*e.command(ARCHES[0]), "-L", "help"], "-L help").split()
    record["data_dirs"] = [d.lstrip("/") for d in listed if d.startswith("/") and (root / d.lstrip("/")).is_dir()]
    _prove(_emulator(root, record))
    record["files"] = _stat_record(root)
    write_atomic(work / RECORD, json.dumps(record, indent=1) + "\n")


def _verify(entry: Path) -> str | None:
    try:
        record = read_record(entry / RECORD, "lab rebuilds it")
    except CacheError as exc:
        return exc.message
    if record.get("version") != ENTRY_VERSION:
        return "an older entry layout"
    files = record.get("files")
    if not isinstance(files, dict):
        return "its record lists no files"
    for rel, (size, mtime) in files.items():
        try:
            st = (entry / "root" / rel).stat()
        except OSError:
            return f"{rel} is missing"
        if st.st_size != size or st.st_mtime_ns != mtime:
            return f"{rel} was changed (size or mtime)"
    return None


_memo: dict[tuple[str, str, str], Emulator] = {}
_memo_lock = threading.Lock()


def ensure(cfg: Config, origin: str | None = None, pin: str | None = None) -> Emulator:
    """The QEMU of ``origin`` (default ``qemu.from``): the host's, or the suite's cache entry, built if missing."""
    origin = origin or cfg.qemu.origin
    pin = _pin(cfg, origin) if pin is None else pin
    if origin == axes.QEMU_HOST:
        return HOST
    key = (str(cfg.cache_dir), origin, pin)
    with _memo_lock:  # one resolution per process (the runner's threads share it)
        if key not in _memo:
            _memo[key] = _ensure(cfg, origin, pin)
        return _memo[key]


def _pin(cfg: Config, origin: str) -> str:
    """The configured ``qemu.version``: it pins the configured origin only."""
    return cfg.qemu.version if origin == cfg.qemu.origin else ""


def _resolve(cfg: Config, origin: str, pin: str) -> tuple[Apt, list[Package], str, str]:
    """The private apt, the packages, the QEMU packages' version and the cache entry's name of ``origin``'s QEMU
    (no download)."""
    apt = suite_apt(cfg, origin)
    apt.update(cfg.apt.refresh_hours)
    names = wanted(apt, pin)
    try:
        packages = apt.closure(names, apt.arches[0])
    except ImageError as exc:
        if pin and "not found" in exc.message:
            raise UserError(
                f"qemu.version: {pin!r} is not in {origin} ({exc.message})", "drop qemu.version or name one the suite has"
            ) from None
        raise ImageError(
            f"the QEMU packages of {origin} do not resolve: {exc.message}", "run again later or pick another qemu.from"
        ) from None
    version = next(p.version for p in packages if p.name.startswith("qemu-system-"))
    name = f"{origin}-{version.split(':')[-1]}-" + sha256_text(ENTRY_VERSION, *(f"{p.spec} {p.sha256}" for p in packages))[:12]
    return apt, packages, version, name


def _cache(cfg: Config) -> BuildCache:
    return BuildCache(cfg.cache_dir / "qemu", cfg.timeouts.scaled("lock"), "QEMU")


def _ensure(cfg: Config, origin: str, pin: str) -> Emulator:
    apt, packages, version, name = _resolve(cfg, origin, pin)
    cache = _cache(cfg)

    def build(work: Path) -> None:
        log.info("unpacking QEMU %s from %s (%d packages)", version, origin, len(packages))
        _build(work, origin, version, packages, apt.download(packages, cfg.cache_dir / "debs"), host_arch().triplet)

    entry = cache.ensure(name, build, _verify)
    return _emulator(entry.path / "root", read_record(entry.path / RECORD, "lab rebuilds it"))


def origins(cfg: Config) -> list[str]:
    """The QEMU origins ``cfg`` runs: ``qemu.from`` and the ``run.axes`` qemu values."""
    return list(dict.fromkeys((cfg.qemu.origin, *cfg.run.axes.get("qemu", ()))))


def prune(cfg: Config) -> list[Path]:
    """Delete QEMU entries (and abandoned builds) that no origin of ``cfg`` uses now; what was deleted."""
    cache = _cache(cfg)
    keep = {_resolve(cfg, o, _pin(cfg, o))[3] for o in origins(cfg) if o != axes.QEMU_HOST}
    doomed = [d for d in cache.entries() if d.name not in keep]
    for d in doomed:
        with cache.lock(d.name):
            shutil.rmtree(d, ignore_errors=True)
    return doomed + cache.sweep()


def entry_of(e: Emulator) -> Path | None:
    """The cache entry directory an emulator runs from (None: the host's)."""
    return e.root.parent if e.root is not None else None
