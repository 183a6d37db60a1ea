"""The payload variant and toolchain tables: the one source of libc names, linkages, toolchains and flags.

A variant is a (libc, linkage) pair built by one toolchain row. Every row
compiles with Debian's clang (one compiler for every target) against a sysroot
of the guest suite's own packages (:mod:`lab.payloads.sysroot`), and links with
the LLD that the pinned ``ziglang`` wheel carries (LLVM 20: bookworm's lld 16
cannot link trixie's riscv64 libc.a). So a cell's libc is the guest's, for both
linkages. Each toolchain has a flags entry per linkage; an unknown linkage is
an error, never a silent default.

Placeholders in a row's arguments: ``{triplet}``, ``{uname}``, ``{musl}`` (musl's name of the arch: its loader's), ``{musl_triplet}``, ``{debian}``
(from the arch row), ``{sysroot}``, ``{ld}``, ``{resource}`` (clang's own
headers) and ``{gcc_lib}`` (the sysroot's libgcc directory).

Config validation, the CLI's choices, the report's comparison pairs and
doctor's checks are derived from these rows through the functions below, read
at call time: adding a libc or a linkage is adding rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lab.errors import UserError


@dataclass(frozen=True)
class Toolchain:
    name: str
    libc: str
    cc: tuple[str, ...]  # the compiler driver and its target/sysroot/linker arguments
    linkage_flags: Mapping[str, tuple[str, ...]]  # linkage -> its extra flags
    version_argv: tuple[str, ...]
    host_packages: str  # what to install when it is missing (for errors and doctor)
    sysroot_packages: tuple[str, ...] = ()  # the suite's packages this toolchain builds against ({gcc}: its gcc major)
    libc_package: str = ""  # the package that provides this libc at run time (its version is the cell's libc version)
    pre: tuple[str, ...] = ()  # objects before the sources (start files, where the driver does not add them)
    post: tuple[str, ...] = ()  # after the sources (libraries, end files)

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


CLANG = "clang-16"  # Debian 12's newest clang; the host package list installs it
ZIG_VERSION = "0.15.2"  # pinned in pyproject.toml: its LLD links every variant
_MUSL = "{sysroot}/usr/lib/{musl_triplet}"
_MULTIARCH = ("-idirafter", "{sysroot}/usr/include/{triplet}", "-B{sysroot}/usr/lib/{triplet}", "-L{sysroot}/usr/lib/{triplet}")
TOOLCHAINS: dict[str, Toolchain] = {
    "clang": Toolchain(
        name="clang",
        libc="glibc",
        # clang 16 knows no multiarch directories for loongarch64: the sysroot's are named (elsewhere, twice)
        cc=(CLANG, "--target={triplet}", "--sysroot={sysroot}", "--ld-path={ld}", *_MULTIARCH),
        linkage_flags={"static": ("-static",), "dynamic": ("-no-pie",)},
        version_argv=(CLANG, "-dumpversion"),
        host_packages="apt-get install clang-16 (./setup.sh does)",
        sysroot_packages=("libc6", "libc6-dev", "linux-libc-dev", "libgcc-{gcc}-dev", "libgcc-s1"),
        libc_package="libc6",
    ),
    # musl the way Debian's musl-gcc.specs does it: musl's own headers, start files and libc, gcc's libgcc.
    "clang-musl": Toolchain(
        name="clang",
        libc="musl",
        cc=(
            CLANG,
            "--target={musl_triplet}",
            "--ld-path={ld}",
            "-nostdinc",
            "-isystem",
            "{resource}/include",
            "-isystem",
            "{sysroot}/usr/include/{musl_triplet}",
            "-nostdlib",
        ),
        linkage_flags={"static": ("-static",), "dynamic": ("-no-pie", "-Wl,-dynamic-linker,/lib/ld-musl-{musl}.so.1")},
        version_argv=(CLANG, "-dumpversion"),
        host_packages="apt-get install clang-16 (./setup.sh does)",
        sysroot_packages=("musl", "musl-dev", "linux-libc-dev", "libgcc-{gcc}-dev"),
        libc_package="musl",
        pre=(f"{_MUSL}/crt1.o", f"{_MUSL}/crti.o"),
        post=(f"-L{_MUSL}", "-lc", "{gcc_lib}/libgcc.a", f"{_MUSL}/crtn.o"),
    ),
}

VARIANTS: list[Variant] = [
    Variant("glibc-dynamic", "glibc", "dynamic", "clang"),
    Variant("glibc-static", "glibc", "static", "clang"),
    Variant("musl-dynamic", "musl", "dynamic", "clang-musl"),
    Variant("musl-static", "musl", "static", "clang-musl"),
]

# One policy for every variant. -g0 and the prefix map keep builds byte-identical across checkouts.
FLAGS: tuple[str, ...] = (
    "-std=gnu11",
    "-O2",
    "-g0",
    "-Wall",
    "-Wextra",
    "-fno-pie",
    "-fno-stack-protector",
    "-U_FORTIFY_SOURCE",
    "-Wl,-z,now",
    "-Wl,-z,relro",
)


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
    """The toolchain rows the variants use, once each."""
    return [TOOLCHAINS[name] for name in dict.fromkeys(v.toolchain for v in VARIANTS)]


def libc_packages() -> dict[str, str]:
    """libc -> the package that provides it at run time (in the image and in the sysroot)."""
    return {tc.libc: tc.libc_package for tc in toolchains() if tc.libc_package}


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
