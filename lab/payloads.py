"""Payload builds: the fault probe for every arch × variant, content-addressed and cached.

A build lives in ``<cache>/payloads/<arch>-<variant>-<key>/`` holding the
binary, its ``build_info.h`` and ``build.json`` (argv, toolchain version,
warnings, ELF facts, SHA256). The key hashes the sources, the generated
header, the compile argv and the toolchain's version, so a rebuild with
unchanged inputs is a no-op. zig's own cache lives under ``<cache>/zig``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import elf
from lab.arches import Arch
from lab.config import Config
from lab.errors import ImageError, UserError
from lab.toolchains import TOOLCHAINS, Variant, build_info_h, compile_argv, fill
from lab.util import build_dir, sha256_file, sha256_text

log = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).resolve().parent.parent / "payloads"
SOURCES = ("fault_probe.c",)
BUILDER_VERSION = "2"  # bump when build.json or the build procedure changes for equal inputs
BINARY = "fault-probe"


class BuildError(ImageError):
    """A payload failed to compile (the message carries the compiler's first error)."""


@dataclass(frozen=True)
class Payload:
    arch: Arch
    variant: Variant
    key: str
    dir: Path
    info: dict[str, Any]

    @property
    def binary(self) -> Path:
        return self.dir / BINARY

    @property
    def digest(self) -> str:
        return str(self.info["sha256"])


class PayloadStore:
    def __init__(self, cfg: Config, source_dir: Path = SOURCE_DIR, extra_defines: tuple[str, ...] = ()) -> None:
        """``extra_defines`` are for tests only: they change the binary (and its cache key) but not the
        flags the probe reports, so a deliberately different build keeps its cell identity."""
        self.cfg = cfg
        self.root = cfg.cache_dir / "payloads"
        self.source_dir = source_dir
        self.extra = tuple(f"-D{d}" for d in extra_defines)
        self._versions: dict[tuple[str, str], str] = {}

    def _env(self) -> dict[str, str]:
        zig_cache = str(self.cfg.cache_dir / "zig")
        return dict(os.environ, ZIG_GLOBAL_CACHE_DIR=zig_cache, ZIG_LOCAL_CACHE_DIR=zig_cache, LC_ALL="C")

    def toolchain_version(self, arch: Arch, v: Variant) -> str:
        tc = TOOLCHAINS[v.toolchain]
        cache_key = (tc.name, arch.name)
        if cache_key not in self._versions:
            argv = fill(tc.version_argv, arch)
            try:
                out = subprocess.run(argv, capture_output=True, text=True, check=True, env=self._env(), timeout=120)
            except (FileNotFoundError, subprocess.CalledProcessError):
                remedy = tc.host_packages.format(triplet=arch.triplet.replace("_", "-"), debian=arch.debian)
                raise UserError(f"toolchain {tc.name} for {arch.name} is not installed ({argv[0]})", remedy) from None
            self._versions[cache_key] = out.stdout.strip()
        return self._versions[cache_key]

    def _inputs(self, arch: Arch, v: Variant) -> tuple[str, str, list[str]]:
        header = build_info_h(arch, v, self.toolchain_version(arch, v))
        # Paths in argv are placeholders for the key: the real build runs in a temp dir.
        argv = compile_argv(arch, v, Path("/src") / SOURCES[0], Path("/inc"), Path("/out") / BINARY) + list(self.extra)
        sources = [(self.source_dir / s).read_text() for s in SOURCES]
        key = sha256_text(BUILDER_VERSION, *sources, header, "\0".join(argv), self.toolchain_version(arch, v))
        return key, header, argv

    def ensure(self, arch: Arch, v: Variant) -> Payload:
        key, header, _ = self._inputs(arch, v)
        final = self.root / f"{arch.name}-{v.name}-{key[:16]}"
        if final.exists():
            info = json.loads((final / "build.json").read_text())
            if (final / BINARY).exists() and sha256_file(final / BINARY) == info.get("sha256"):
                return Payload(arch, v, key, final, info)
            log.warning("payload %s is corrupt: rebuilding", final.name)
            shutil.rmtree(final)
        return self._build(arch, v, key, header, final)

    def _build(self, arch: Arch, v: Variant, key: str, header: str, final: Path) -> Payload:
        with build_dir(final) as work:
            src = work / "src"
            src.mkdir()
            for s in SOURCES:
                shutil.copy(self.source_dir / s, src / s)
            (work / "build_info.h").write_text(header)
            argv = compile_argv(arch, v, src / SOURCES[0], work, work / BINARY) + list(self.extra)
            log.debug("compiling: %s", " ".join(argv))
            started = time.monotonic()
            proc = subprocess.run(argv, capture_output=True, text=True, env=self._env(), cwd=work, check=False)
            seconds = time.monotonic() - started
            if proc.returncode != 0:
                first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:300])
                raise BuildError(
                    f"{arch.name} {v.name}: compile failed: {first}",
                    f"run with -v to see the full command; {SOURCES[0]} must build on every toolchain",
                )
            shutil.rmtree(src)
            info = {
                "arch": arch.name,
                "variant": v.name,
                "libc": v.libc,
                "linkage": v.linkage,
                "toolchain": v.toolchain,
                "toolchain_version": self.toolchain_version(arch, v),
                "argv": argv,
                "warnings": [ln for ln in proc.stderr.splitlines() if "warning:" in ln],
                "build_seconds": round(seconds, 3),
                "sha256": sha256_file(work / BINARY),
                "elf": elf.facts(str(work / BINARY)),
                "key": key,
            }
            (work / "build.json").write_text(json.dumps(info, indent=2) + "\n")
        log.info("built %s %s in %.1fs", arch.name, v.name, seconds)
        return Payload(arch, v, key, final, info)

    def cached(self) -> list[dict[str, Any]]:
        rows = []
        for d in sorted(self.root.glob("*-*")) if self.root.exists() else []:
            if d.name.startswith(".") or not (d / "build.json").exists():
                continue
            rows.append({"dir": d, **json.loads((d / "build.json").read_text())})
        return rows
