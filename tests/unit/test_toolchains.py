"""Compile command lines as exact lists: one compiler (clang) against the guest suite's sysroot, one linker (zig's LLD)."""

from pathlib import Path

import pytest

from lab.arches import ARCHES, get
from lab.errors import UserError
from lab.payloads.toolchains import ToolPaths, build_info_h, compile_argv
from lab.payloads.variants import FLAGS, TOOLCHAINS, VARIANTS, select_variants, variant

SRC, INC, OUT = Path("/s/fault_probe.c"), Path("/i"), Path("/o/fault-probe")
TOOLS = ToolPaths(
    Path("/c/sysroots/arm64"),
    Path("/c/tools/ld.lld"),
    Path("/usr/lib/llvm-16/lib/clang/16"),
    Path("/c/sysroots/arm64/usr/lib/gcc/aarch64-linux-gnu/14"),
)
POLICY = [
    "-std=gnu11", "-O2", "-g0", "-Wall", "-Wextra", "-fno-pie", "-fno-stack-protector", "-U_FORTIFY_SOURCE",
    "-Wl,-z,now", "-Wl,-z,relro",
]  # fmt: skip
# clang 16 knows no multiarch directories for loongarch64: the glibc toolchain names the sysroot's (lab.payloads.variants)
MULTIARCH = ["-idirafter", "/c/sysroots/arm64/usr/include/aarch64-linux-gnu", "-B/c/sysroots/arm64/usr/lib/aarch64-linux-gnu",
             "-L/c/sysroots/arm64/usr/lib/aarch64-linux-gnu"]  # fmt: skip
TAIL = ["-ffile-prefix-map=/s=.", "-I", "/i", "-o", "/o/fault-probe"]


def test_flag_policy_is_one_list() -> None:
    assert list(FLAGS) == POLICY


def test_glibc_static_arm64_builds_against_the_suite_sysroot() -> None:
    assert compile_argv(get("arm64"), variant("glibc-static"), SRC, INC, OUT, TOOLS) == [
        "clang-16", "--target=aarch64-linux-gnu", "--sysroot=/c/sysroots/arm64", "--ld-path=/c/tools/ld.lld", *MULTIARCH,
        *POLICY, "-static", *TAIL, "/s/fault_probe.c",
    ]  # fmt: skip


def test_glibc_dynamic_x86_64_is_not_pie() -> None:
    argv = compile_argv(get("x86_64"), variant("glibc-dynamic"), SRC, INC, OUT, TOOLS)
    assert argv[:2] == ["clang-16", "--target=x86_64-linux-gnu"] and argv[4 + len(MULTIARCH) + len(POLICY)] == "-no-pie"


def test_musl_dynamic_riscv64_uses_the_sysroots_musl_and_loader() -> None:
    musl = "/c/sysroots/arm64/usr/lib/riscv64-linux-musl"
    assert compile_argv(get("riscv64"), variant("musl-dynamic"), SRC, INC, OUT, TOOLS) == [
        "clang-16", "--target=riscv64-linux-musl", "--ld-path=/c/tools/ld.lld", "-nostdinc",
        "-isystem", "/usr/lib/llvm-16/lib/clang/16/include", "-isystem", "/c/sysroots/arm64/usr/include/riscv64-linux-musl", "-nostdlib",
        *POLICY, "-no-pie", "-Wl,-dynamic-linker,/lib/ld-musl-riscv64.so.1", *TAIL,
        f"{musl}/crt1.o", f"{musl}/crti.o", "/s/fault_probe.c",
        f"-L{musl}", "-lc", "/c/sysroots/arm64/usr/lib/gcc/aarch64-linux-gnu/14/libgcc.a", f"{musl}/crtn.o",
    ]  # fmt: skip


def test_cache_keys_use_placeholders_not_real_paths() -> None:
    argv = compile_argv(get("arm64"), variant("musl-static"), SRC, INC, OUT)
    assert "--ld-path=/ld.lld" in argv and "-isystem" in argv and "/sysroot/usr/include/aarch64-linux-musl" in argv


def test_every_variant_on_every_arch_follows_the_policy() -> None:
    assert len(VARIANTS) == 4 and len(ARCHES) >= 3
    for arch in ARCHES:
        for v in VARIANTS:
            argv = compile_argv(arch, v, SRC, INC, OUT, TOOLS)
            start = argv.index(POLICY[0])
            assert argv[start : start + len(POLICY)] == POLICY
            assert ("-static" in argv) == (v.linkage == "static") and ("-no-pie" in argv) == (v.linkage == "dynamic")
            assert TOOLCHAINS[v.toolchain].libc == v.libc and argv[0] == "clang-16"
            assert argv[start + len(POLICY) : start + len(POLICY) + len(arch.cflags)] == list(arch.cflags)  # the row's ISA
            musl = f"--target={arch.musl_triplet}" in argv
            assert musl == (v.libc == "musl") and (f"-Wl,-dynamic-linker,/lib/ld-musl-{arch.musl_name}.so.1" in argv) == (
                v.name == "musl-dynamic")  # fmt: skip


def test_variant_selection() -> None:
    assert [v.name for v in select_variants("all")] == ["glibc-dynamic", "glibc-static", "musl-dynamic", "musl-static"]
    assert [v.name for v in select_variants("musl-static,glibc-dynamic")] == ["glibc-dynamic", "musl-static"]
    with pytest.raises(UserError, match=r"unknown variant 'uclibc'.*glibc-dynamic, glibc-static, musl-dynamic, musl-static"):
        select_variants("uclibc")


def test_build_info_header() -> None:
    h = build_info_h(get("riscv64"), variant("musl-static"), "clang 16.0.6 + LLD 20.1.2 (zig 0.15.2)", "1.2.5")
    assert '#define PROBE_LIBC "musl"\n' in h
    assert '#define PROBE_LIBC_VERSION "1.2.5"\n' in h
    assert '#define PROBE_TOOLCHAIN "clang 16.0.6 + LLD 20.1.2 (zig 0.15.2)"\n' in h
    assert f'#define PROBE_FLAGS "{" ".join(POLICY)} -static"\n' in h
