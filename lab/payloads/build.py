"""Payload builds: the fault probe for every arch × variant, content-addressed and cached.

A build lives in ``<cache>/payloads/<arch>-<variant>-<key>/`` holding the
binary, its ``build_info.h`` and ``build.json`` (argv, toolchain and linker
versions, the sysroot's packages, warnings, ELF facts, SHA256). The key hashes
the sources, the generated header, the compile argv, the toolchain's version
and the sysroot's key, so a rebuild with unchanged inputs is a no-op.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import resources
from lab.arches import Arch
from lab.cache import BuildCache, check_files, read_record
from lab.config import Config
from lab.errors import CacheError, ImageError, LabError, UserError
from lab.files import sha256_file, sha256_text
from lab.guests import elf
from lab.guests.images import ImageStore
from lab.payloads import toolchains
from lab.payloads.sysroot import Sysroot, SysrootStore
from lab.payloads.variants import Variant, toolchain, variant

log = logging.getLogger(__name__)

SOURCE_DIR = resources.payloads_dir()
BUILDER_VERSION = "3"  # bump when build.json or the build procedure changes for equal inputs


@dataclass(frozen=True)
class Program:
    """A C program lab builds for the guests: its binary's name and its one source file."""

    binary: str
    source: str


PROBE = Program("fault-probe", "fault_probe.c")
TRACER = Program("fault-trace", "fault_trace.c")  # built as one static variant per arch: it runs in any image
RESEED = Program("lab-reseed", "reseed.c")  # reseeds a restored guest's CRNG; static musl: a few KiB to upload
RUNNER = Program("lab-runner", "runner.c")  # runs a round's probe runs in the guest (lab.measure.batch); static musl
GUEST_TOOLS = (RUNNER, RESEED)  # lab's own programs in every guest (lab payloads build builds them too)


class BuildError(ImageError):
    """A payload failed to compile (the message carries the compiler's first error)."""


@dataclass(frozen=True)
class Payload:
    arch: Arch
    variant: Variant
    key: str
    dir: Path
    info: dict[str, Any]
    built: bool = False  # built by this call (False: a verified cached build was reused)
    program: Program = PROBE

    @property
    def binary(self) -> Path:
        return self.dir / self.program.binary

    @property
    def digest(self) -> str:
        return str(self.info["sha256"])


class PayloadStore:
    def __init__(
        self,
        cfg: Config,
        source_dir: Path = SOURCE_DIR,
        extra_defines: tuple[str, ...] = (),
        root: Path | None = None,
        suite: str | None = None,
        program: Program = PROBE,
    ) -> None:
        """``extra_defines`` are for tests only: they change the binary (and its cache key) but not the
        flags the probe reports, so a deliberately different build keeps its cell identity. ``root`` moves
        the payload entries only (sysroots and apt stay in the cache)."""
        self.cfg = cfg
        self.root = root or cfg.cache_dir / "payloads"
        self.cache = BuildCache(self.root, cfg.timeouts.scaled("lock"), "payload")
        self.source_dir = source_dir
        self.program = program
        self.extra = tuple(f"-D{d}" for d in extra_defines)
        self.suite = suite  # whose libc the builds link against (default: the recipe's suite)
        self._sysroots: dict[str, Sysroot] = {}
        self._sysroot_store: SysrootStore | None = None

    def _env(self) -> dict[str, str]:
        zig_cache = str(self.cfg.cache_dir / "zig")
        return dict(os.environ, ZIG_GLOBAL_CACHE_DIR=zig_cache, ZIG_LOCAL_CACHE_DIR=zig_cache, LC_ALL="C")

    def toolchain_version(self, arch: Arch, v: Variant) -> str:
        return toolchains.version(toolchain(v))

    def sysroot(self, arch: Arch) -> Sysroot:
        if arch.name not in self._sysroots:
            self._sysroot_store = self._sysroot_store or SysrootStore(self.cfg, ImageStore(self.cfg, self.suite))
            self._sysroots[arch.name] = self._sysroot_store.ensure(arch)
        return self._sysroots[arch.name]

    def _inputs(self, arch: Arch, v: Variant) -> tuple[str, str, Sysroot]:
        sysroot = self.sysroot(arch)
        header = toolchains.build_info_h(arch, v, self.toolchain_version(arch, v), sysroot.libc_version(v.libc))
        # Paths in argv are placeholders for the key: the real build runs in a temp dir against the cached sysroot.
        prog = self.program
        argv = toolchains.compile_argv(arch, v, Path("/src") / prog.source, Path("/inc"), Path("/out") / prog.binary) + list(self.extra)
        key = sha256_text(
            BUILDER_VERSION,
            (self.source_dir / prog.source).read_text(),
            header,
            "\0".join(argv),
            self.toolchain_version(arch, v),
            sysroot.key,
        )
        return key, header, sysroot

    def entry_name(self, arch: Arch, v: Variant) -> str:
        """The cache entry's directory name: arch, variant and the input key."""
        return self._entry_name(arch, v, self._inputs(arch, v)[0])

    def ensure(self, arch: Arch, v: Variant) -> Payload:
        """The cached build of ``v`` for ``arch``: built (once, under a lock) if missing or corrupt."""
        key, header, sysroot = self._inputs(arch, v)
        entry = self.cache.ensure(self._entry_name(arch, v, key), lambda work: self._build(arch, v, key, header, sysroot, work), verify)
        return Payload(arch, v, key, entry.path, _read_info(entry.path), entry.built, self.program)

    def _entry_name(self, arch: Arch, v: Variant, key: str) -> str:
        prefix = "" if self.program == PROBE else f"{self.program.binary}-"
        return f"{prefix}{arch.name}-{v.name}-{key[:16]}"

    def _build(self, arch: Arch, v: Variant, key: str, header: str, sysroot: Sysroot, work: Path) -> None:
        src, prog = work / "src", self.program
        src.mkdir()
        shutil.copy(self.source_dir / prog.source, src / prog.source)
        (work / "build_info.h").write_text(header)
        tools = toolchains.ToolPaths(
            sysroot.dir, toolchains.linker(self.cfg.cache_dir / "tools"), toolchains.resource_dir(), sysroot.gcc_lib
        )
        argv = toolchains.compile_argv(arch, v, src / prog.source, work, work / prog.binary, tools) + list(self.extra)
        log.debug("compiling: %s", " ".join(argv))
        started = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, env=self._env(), cwd=work, check=False)
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:300])
            raise BuildError(
                f"{arch.name} {v.name}: compile failed: {first}",
                f"run with -v to see the full command; {prog.source} must build on every toolchain",
            )
        shutil.rmtree(src)
        info = {
            "program": prog.binary,
            "arch": arch.name,
            "variant": v.name,
            "libc": v.libc,
            "linkage": v.linkage,
            "toolchain": v.toolchain,
            "toolchain_version": self.toolchain_version(arch, v),
            "libc_version": sysroot.libc_version(v.libc),
            "sysroot": sysroot.facts(),
            "argv": argv,
            "warnings": [ln for ln in proc.stderr.splitlines() if "warning:" in ln],
            "build_seconds": round(seconds, 3),
            "sha256": sha256_file(work / prog.binary),
            "elf": elf.facts(str(work / prog.binary)),
            "key": key,
        }
        (work / "build.json").write_text(json.dumps(info, indent=2) + "\n")
        log.info("built %s %s %s in %.1fs", prog.binary, arch.name, v.name, seconds)

    def cached(self) -> list[dict[str, Any]]:
        """Every cached build's facts; corrupt entries are listed with their problem."""
        rows = []
        for d in self.cache.entries():
            problem = verify(d)
            info: dict[str, Any] = {}
            with suppress(CacheError):
                info = _read_info(d)
            rows.append({"dir": d, "status": "ok" if problem is None else f"corrupt: {problem}", **info})
        return rows


def _read_info(d: Path) -> dict[str, Any]:
    return read_record(d / "build.json", "lab payloads build rebuilds it")


def verify(d: Path) -> str | None:
    """None if the binary matches the SHA256 in ``build.json``, else what is wrong."""
    try:
        info = _read_info(d)
    except CacheError as exc:
        return exc.message
    return check_files(d, {str(info.get("program", PROBE.binary)): {"sha256": info.get("sha256")}})


def guest_tool(cfg: Config, arch: Arch, program: Program, suite: str | None = None) -> Path:
    """One of lab's own guest-side programs (static musl, so it runs in any image), built and cached like a payload."""
    return PayloadStore(cfg, suite=suite, program=program).ensure(arch, variant("musl-static")).binary


def reseed_helper(cfg: Config, arch: Arch, suite: str | None = None) -> Path | None:
    """The arch's reseed helper (payloads/reseed.c, static musl), built and cached like every payload.
    :func:`lab.guests.boot.boot` restores a snapshot only with it: it reseeds each restored guest's CRNG. A helper
    that cannot be built costs the restore, never the command: a warning, and the guest boots cold."""
    try:
        return guest_tool(cfg, arch, RESEED, suite)
    except UserError:
        raise
    except LabError as exc:
        log.warning("%s: the reseed helper did not build (%s); guests boot cold", arch.name, exc.message)
        return None
