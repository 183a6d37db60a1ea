"""The payload variant and toolchain tables: the one source of libc names, linkages, toolchains and flags.

A variant is a (libc, linkage) pair built by one toolchain: musl by zig (the
``ziglang`` wheel: every arch from one download), glibc by Debian's gcc for the
arch's triplet (zig refuses static glibc, and one toolchain per libc keeps
static and dynamic comparable). Each toolchain has a flags entry per linkage;
an unknown linkage is an error, never a silent default.

Config validation, the CLI's choices, the report's comparison pairs and
doctor's checks are derived from these rows through the functions below, read
at call time: adding a libc or a linkage is adding rows.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass

from lab.errors import UserError


@dataclass(frozen=True)
class Toolchain:
    name: str
    libc: str
    cc: tuple[str, ...]  # {triplet}, {uname} and {debian} are filled from the arch row
    target: tuple[str, ...]  # target-selection arguments
    linkage_flags: Mapping[str, tuple[str, ...]]  # linkage -> its extra flags
    version_argv: tuple[str, ...]
    host_packages: str  # what to install when it is missing (for errors and doctor)
    musl_version: str = ""  # musl is built into the toolchain and cannot be asked at run time

    def flags_for(self, linkage: str) -> tuple[str, ...]:
        try:
            return self.linkage_flags[linkage]
        except KeyError:
            raise UserError(
                f"toolchain {self.name} has no flags for linkage {linkage!r}",
                "add it to the toolchain's linkage_flags in lab.payloads.variants (known: " + ", ".join(self.linkage_flags) + ")",
            ) from None


@dataclass(frozen=True)
class Variant:
    name: str
    libc: str
    linkage: str
    toolchain: str


ZIG_VERSION = "0.15.2"  # pinned in pyproject.toml: it decides the musl version below
TOOLCHAINS: dict[str, Toolchain] = {
    "zig": Toolchain(
        name="zig",
        libc="musl",
        cc=(sys.executable, "-m", "ziglang", "cc"),
        target=("-target", "{uname}-linux-musl"),
        linkage_flags={"static": ("-static",), "dynamic": ("-dynamic",)},
        version_argv=(sys.executable, "-m", "ziglang", "version"),
        host_packages="pip install ziglang (./setup.sh does)",
        musl_version="1.2.5",
    ),
    "gcc": Toolchain(
        name="gcc",
        libc="glibc",
        cc=("{triplet}-gcc",),
        target=(),
        linkage_flags={"static": ("-static",), "dynamic": ()},
        version_argv=("{triplet}-gcc", "-dumpfullversion"),
        host_packages="apt-get install gcc-{triplet} libc6-dev-{debian}-cross (native: gcc libc6-dev)",
    ),
}

VARIANTS: list[Variant] = [
    Variant("glibc-dynamic", "glibc", "dynamic", "gcc"),
    Variant("glibc-static", "glibc", "static", "gcc"),
    Variant("musl-dynamic", "musl", "dynamic", "zig"),
    Variant("musl-static", "musl", "static", "zig"),
]

# One policy for every variant. -g0 and the prefix map keep builds byte-identical across checkouts.
FLAGS: tuple[str, ...] = (
    "-std=gnu11", "-O2", "-g0", "-Wall", "-Wextra",
    "-fno-pie", "-no-pie", "-fno-stack-protector", "-U_FORTIFY_SOURCE",
    "-Wl,-z,now", "-Wl,-z,relro",
)  # fmt: skip


def libcs() -> tuple[str, ...]:
    """Every libc in table order (the first is the reference in comparisons)."""
    return tuple(dict.fromkeys(v.libc for v in VARIANTS))


def linkages() -> tuple[str, ...]:
    """Every linkage in table order (the first is the reference in comparisons)."""
    return tuple(dict.fromkeys(v.linkage for v in VARIANTS))


def names() -> list[str]:
    return [v.name for v in VARIANTS]


def toolchain(v: Variant) -> Toolchain:
    return TOOLCHAINS[v.toolchain]


def toolchains() -> list[Toolchain]:
    """The toolchains the variants use, once each (what doctor checks per arch)."""
    return [TOOLCHAINS[name] for name in dict.fromkeys(v.toolchain for v in VARIANTS)]


def variant(name: str) -> Variant:
    for v in VARIANTS:
        if v.name == name:
            return v
    raise UserError(f"unknown variant {name!r}", "use one of: " + ", ".join(names()) + ", or 'all'")


def find(libc: str, linkage: str) -> Variant | None:
    return next((v for v in VARIANTS if (v.libc, v.linkage) == (libc, linkage)), None)


def select_variants(spec: str) -> list[Variant]:
    """``all`` or a comma-separated list of variant names; an empty selection is an error, never "the defaults"."""
    if spec.strip().lower() == "all":
        return list(VARIANTS)
    picked = {variant(part.strip()).name for part in spec.split(",") if part.strip()}
    if not picked:
        raise UserError(f"empty variant list {spec!r}", "use 'all' or e.g. " + ",".join(names()[:2]))
    return [v for v in VARIANTS if v.name in picked]


def comparison_pairs() -> list[tuple[str, str, str]]:
    """(what, reference variant, other variant) pairs that change one thing at a time.

    Every other libc against the first, per linkage; then every other linkage against the first, per libc.
    """
    pairs = []
    ref_libc, ref_link = libcs()[0], linkages()[0]
    for link in linkages():
        for libc in libcs()[1:]:
            a, b = find(ref_libc, link), find(libc, link)
            if a and b:
                pairs.append((f"{libc} vs {ref_libc}, {link}", a.name, b.name))
    for libc in libcs():
        for link in linkages()[1:]:
            a, b = find(libc, ref_link), find(libc, link)
            if a and b:
                pairs.append((f"{link} vs {ref_link}, {libc}", a.name, b.name))
    return pairs
