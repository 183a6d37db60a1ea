"""Sysroot assembly that needs no network: versions, package lists, links kept inside."""

from __future__ import annotations

import os
from pathlib import Path

from lab.payloads.sysroot import _contain_links, package_names, upstream


def test_upstream_versions() -> None:
    assert upstream("2.41-12+deb13u5") == "2.41" and upstream("1:2.3-1") == "2.3" and upstream("1.2.5-3.1~deb13u1") == "1.2.5"


def test_the_package_list_follows_the_suites_gcc() -> None:
    assert package_names("12") == ["libc6", "libc6-dev", "linux-libc-dev", "libgcc-12-dev", "libgcc-s1", "musl", "musl-dev"]


def test_absolute_links_are_pointed_inside_the_sysroot(tmp_path: Path) -> None:
    """bookworm's libc6-dev has libm.so -> /lib/<triplet>/libm.so.6: followed as is, a linker would use the host's libm."""
    lib = tmp_path / "usr/lib/x86_64-linux-gnu"
    lib.mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    (lib / "libm.so.6").write_text("guest")
    (lib / "libm.so").symlink_to("/lib/x86_64-linux-gnu/libm.so.6")
    _contain_links(tmp_path)
    assert os.readlink(lib / "libm.so") == "../../../lib/x86_64-linux-gnu/libm.so.6"
    assert (lib / "libm.so").read_text() == "guest"
