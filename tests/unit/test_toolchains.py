import sys
from pathlib import Path

import pytest

from lab.arches import ARCHES, get
from lab.errors import UserError
from lab.payloads.toolchains import build_info_h, compile_argv
from lab.payloads.variants import FLAGS, TOOLCHAINS, VARIANTS, select_variants, variant

SRC, INC, OUT = Path("/s/fault_probe.c"), Path("/i"), Path("/o/fault-probe")
POLICY = [
    "-std=gnu11", "-O2", "-g0", "-Wall", "-Wextra", "-fno-pie", "-no-pie", "-fno-stack-protector", "-U_FORTIFY_SOURCE",
    "-Wl,-z,now", "-Wl,-z,relro",
]  # fmt: skip
TAIL = ["-ffile-prefix-map=/s=.", "-I", "/i", "-o", "/o/fault-probe", "/s/fault_probe.c"]


def test_flag_policy_is_one_list() -> None:
    assert list(FLAGS) == POLICY


def test_glibc_static_arm64_uses_debian_cross_gcc() -> None:
    assert compile_argv(get("arm64"), variant("glibc-static"), SRC, INC, OUT) == ["aarch64-linux-gnu-gcc", *POLICY, "-static", *TAIL]


def test_glibc_dynamic_x86_64() -> None:
    assert compile_argv(get("x86_64"), variant("glibc-dynamic"), SRC, INC, OUT) == ["x86_64-linux-gnu-gcc", *POLICY, *TAIL]


def test_musl_dynamic_riscv64_uses_zig() -> None:
    assert compile_argv(get("riscv64"), variant("musl-dynamic"), SRC, INC, OUT) == [
        sys.executable, "-m", "ziglang", "cc", "-target", "riscv64-linux-musl", *POLICY, "-dynamic", *TAIL,
    ]  # fmt: skip


def test_musl_static_arm64() -> None:
    argv = compile_argv(get("arm64"), variant("musl-static"), SRC, INC, OUT)
    assert argv[4:6] == ["-target", "aarch64-linux-musl"] and argv[6 + len(POLICY)] == "-static"


def test_every_variant_on_every_arch_follows_the_policy() -> None:
    assert len(VARIANTS) * len(ARCHES) == 12
    for arch in ARCHES:
        for v in VARIANTS:
            argv = compile_argv(arch, v, SRC, INC, OUT)
            start = argv.index(POLICY[0])
            assert argv[start : start + len(POLICY)] == POLICY
            assert ("-static" in argv) == (v.linkage == "static")
            assert TOOLCHAINS[v.toolchain].libc == v.libc


def test_variant_selection() -> None:
    assert [v.name for v in select_variants("all")] == ["glibc-dynamic", "glibc-static", "musl-dynamic", "musl-static"]
    assert [v.name for v in select_variants("musl-static,glibc-dynamic")] == ["glibc-dynamic", "musl-static"]
    with pytest.raises(UserError, match=r"unknown variant 'uclibc'.*glibc-dynamic, glibc-static, musl-dynamic, musl-static"):
        select_variants("uclibc")


def test_build_info_header() -> None:
    h = build_info_h(get("riscv64"), variant("musl-static"), "0.15.2")
    assert '#define PROBE_LIBC "musl"\n' in h
    assert '#define PROBE_LIBC_VERSION "1.2.5"\n' in h
    assert '#define PROBE_TOOLCHAIN "zig 0.15.2"\n' in h
    assert f'#define PROBE_FLAGS "{" ".join(POLICY)} -static"\n' in h
    assert '#define PROBE_LIBC_VERSION ""\n' in build_info_h(get("riscv64"), variant("glibc-static"), "12.2.0")
