from pathlib import Path

from lab.arches import get
from lab.guests.keys import KeyPair
from lab.guests.smoke import check_facts
from lab.guests.ssh import Guest

GOOD = {"machine": "aarch64", "page_size": "4096", "thp": "always madvise [never]", "scratch": "/dev/vda ext4", "elf_class": " 2"}


def test_check_facts_accepts_a_good_guest() -> None:
    assert check_facts(get("arm64"), GOOD, "never", "disk") == []
    assert check_facts(get("arm64"), {**GOOD, "scratch": "/dev/ram0 ext4"}, "never", "ram") == []


def test_check_facts_names_each_problem() -> None:
    bad = {"machine": "x86_64", "page_size": "error: no awk", "thp": "[always] madvise never", "scratch": "", "elf_class": " 1"}
    problems = check_facts(get("arm64"), bad, "never", "disk")
    assert problems == [
        "uname -m is 'x86_64', expected 'aarch64'",
        "page size unreadable: 'error: no awk'",
        "THP is '[always] madvise never', expected [never]",
        "the userland is 32-bit, expected 64-bit",
        "scratch is '', expected '/dev/vda ext4' (guest.scratch: disk)",
    ]


def test_check_facts_holds_the_guest_to_its_flavour_its_word_size_and_a_kernel_without_thp() -> None:
    """Issue 23: a 16k flavour that booted 4k pages, an i386 image with a 64-bit userland, s390x's THP-less kernel."""
    assert check_facts(get("arm64"), GOOD, "never", "disk", 16384) == ["page size is 4096, expected its kernel flavour's 16384"]
    i386 = {**GOOD, "machine": "x86_64", "elf_class": " 1"}
    assert check_facts(get("i386"), i386, "never", "disk", 4096) == []
    assert check_facts(get("i386"), {**i386, "elf_class": " 2"}, "never", "disk") == ["the userland is 64-bit, expected 32-bit"]
    assert check_facts(get("arm64"), {**GOOD, "thp": "none"}, "never", "disk") == []  # no THP: it never uses huge pages
    assert check_facts(get("arm64"), {**GOOD, "thp": "none"}, "always", "disk") == ["THP is 'none', expected [always]"]
    assert check_facts(get("arm64"), GOOD, "never", "ram") == ["scratch is '/dev/vda ext4', expected '/dev/ram0 ext4' (guest.scratch: ram)"]


def test_guest_ssh_argv_pins_the_host_key(tmp_path: Path) -> None:
    g = Guest("arm64", 40022, KeyPair(tmp_path / "id", "ssh-ed25519 AAAAclient"), KeyPair(tmp_path / "hk", "ssh-ed25519 AAAAhost"), 10)
    assert g.known_hosts_line() == "[127.0.0.1]:40022 ssh-ed25519 AAAAhost"
    assert g.ssh_argv(tmp_path / "known") == [
        "ssh", "-p", "40022", "-i", str(tmp_path / "id"),
        "-o", f"UserKnownHostsFile={tmp_path / 'known'}", "-o", "StrictHostKeyChecking=yes",
        "-o", "IdentitiesOnly=yes", "-o", "PasswordAuthentication=no", "root@127.0.0.1",
    ]  # fmt: skip
