"""A real payload build for the host's own arch (no QEMU): ELF facts, content-addressed cache, no warnings."""

from dataclasses import replace
from pathlib import Path

import pytest

from lab import config
from lab.arches import ARCHES, host_can_kvm
from lab.payloads.build import PayloadStore
from lab.payloads.variants import variant

REPO = Path(__file__).resolve().parents[2]
NATIVE = next(a for a in ARCHES if host_can_kvm(a))


@pytest.fixture
def store(tmp_path: Path) -> PayloadStore:
    return PayloadStore(config.load(REPO / "lab.yaml"), root=tmp_path / "payloads")


def test_glibc_dynamic_build_facts_and_cache(store: PayloadStore) -> None:
    p = store.ensure(NATIVE, variant("glibc-dynamic"))
    elf = p.info["elf"]
    assert p.info["warnings"] == []
    assert elf["type"] == "ET_EXEC" and elf["pie"] is False
    assert elf["interpreter"] and elf["interpreter"].startswith("/lib")
    assert elf["needed"] == ["libc.so.6"]
    types = [s["type"] for s in elf["segments"]]
    assert "PT_INTERP" in types and "PT_DYNAMIC" in types and types.count("PT_LOAD") >= 2
    assert sum(elf["relocations"].values()) > 0
    assert 0 < elf["sizes"]["text"] < elf["sizes"]["file"]
    assert elf["bind_now"] is True  # -Wl,-z,now from the flag policy
    mtime = p.binary.stat().st_mtime_ns
    again = store.ensure(NATIVE, variant("glibc-dynamic"))
    assert again.dir == p.dir and again.binary.stat().st_mtime_ns == mtime  # a no-op


def test_glibc_static_has_no_interpreter_and_corruption_rebuilds(store: PayloadStore) -> None:
    p = store.ensure(NATIVE, variant("glibc-static"))
    assert p.info["elf"]["interpreter"] is None and p.info["elf"]["needed"] == []
    p.binary.write_bytes(b"corrupt")
    again = store.ensure(NATIVE, variant("glibc-static"))
    assert again.digest == p.digest and again.binary.read_bytes() != b"corrupt"


def test_rebuilds_in_another_cache_are_byte_identical(store: PayloadStore, tmp_path: Path) -> None:
    other = PayloadStore(replace(store.cfg, cache_dir=tmp_path / "other"))
    a = store.ensure(NATIVE, variant("glibc-dynamic"))
    b = other.ensure(NATIVE, variant("glibc-dynamic"))
    assert a.dir != b.dir.parent and a.digest == b.digest


def test_every_variant_is_built_against_the_guest_suites_own_libc(store: PayloadStore) -> None:
    """Issue 11: never the host's cross libc. The version is checked in the built binary, not trusted from the flags."""
    import json
    import subprocess

    from lab.payloads.sysroot import upstream
    from lab.payloads.variants import VARIANTS

    for v in VARIANTS:
        p = store.ensure(NATIVE, v)
        packages = p.info["sysroot"]["packages"]
        assert p.info["sysroot"]["suite"] == "trixie"
        assert p.info["libc_version"] == upstream(packages["libc6" if v.libc == "glibc" else "musl"])
        if v.linkage == "static":  # runs on this host as it is: the version it carries is the one it reports
            facts = json.loads(subprocess.run([str(p.binary), "--size", "4096"], capture_output=True, text=True, check=True).stdout)[
                "facts"
            ]
            assert facts["libc_version_build"] == p.info["libc_version"]
            if v.libc == "glibc":
                assert facts["libc_version_run"] == p.info["libc_version"]
