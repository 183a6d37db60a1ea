from pathlib import Path

from lab.guests.apt import FALLBACK_MIRROR, Package, detect_mirror, first_dependency, parse_deb822

SHOW = """Package: linux-image-amd64
Version: 6.12.117-1
Architecture: amd64
Depends: linux-image-6.12.117+deb13-amd64 (= 6.12.117-1)
Description: Linux for 64-bit PCs (meta-package)
 This package depends on the latest Linux kernel
 and modules.

Package: dropbear-bin
Version: 2025.89-1~deb13u1
Architecture: amd64
Depends: libc6 (>= 2.38), libcrypt1 (>= 1:4.1.0) | libxcrypt, zlib1g
SHA256: abc
Size: 188720
"""


def test_parse_deb822_stanzas_and_continuations() -> None:
    a, b = parse_deb822(SHOW)
    assert a["Package"] == "linux-image-amd64"
    assert a["Description"].endswith("kernel\nand modules.")
    assert b["Size"] == "188720" and b["SHA256"] == "abc"


def test_first_dependency() -> None:
    a, b = parse_deb822(SHOW)
    assert first_dependency(a["Depends"], "linux-image-") == "linux-image-6.12.117+deb13-amd64"
    assert first_dependency(b["Depends"], "libcrypt") == "libcrypt1"
    assert first_dependency(b["Depends"], "linux-image-") is None


def test_deb_name_escapes_epochs() -> None:
    p = Package("libcrypt1", "1:4.4.38-1", "arm64", "x", 1)
    assert p.deb_name == "libcrypt1_1%3a4.4.38-1_arm64.deb"
    assert p.spec == "libcrypt1:arm64=1:4.4.38-1"


def test_detect_mirror_from_deb822_and_one_line_sources(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.debian.org/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n"
    )
    assert detect_mirror([tmp_path / "missing.list", d]) == "http://mirror.example/debian"
    one = tmp_path / "sources.list"
    one.write_text("# comment\ndeb [arch=amd64] http://ftp.example.org/debian bookworm main\n")
    assert detect_mirror([one]) == "http://ftp.example.org/debian"
    ubuntu = tmp_path / "ubuntu.list"
    ubuntu.write_text("deb http://archive.ubuntu.com/ubuntu noble main\n")
    assert detect_mirror([ubuntu]) == FALLBACK_MIRROR


def test_an_update_that_fetched_nothing_is_not_recorded_as_fresh(tmp_path: Path) -> None:
    """Regression (issue 10.12): offline, apt-get update exits 0 having fetched nothing; the cache stayed broken for 24 h."""
    import pytest

    from lab.errors import ImageError
    from lab.guests.apt import Apt

    apt = Apt(tmp_path / "apt", "trixie", ("main",), ("riscv64",), "http://127.0.0.1:9/debian")  # nothing listens there
    with pytest.raises(ImageError, match=r"fetched no package list for main/riscv64 of trixie from http://127.0.0.1:9/debian"):
        apt.update(24)
    assert apt.missing_lists() == ["main/riscv64"]
    assert apt.lists_age_hours() is None  # doctor says "not fetched yet", and the next command tries again
    assert not (tmp_path / "apt" / "lists" / ".lab-updated").exists()
