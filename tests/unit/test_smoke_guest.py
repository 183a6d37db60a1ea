from pathlib import Path

from lab.arches import get
from lab.guests.keys import KeyPair
from lab.guests.smoke import check_facts
from lab.guests.ssh import Guest

GOOD = {"machine": "aarch64", "page_size": "4096", "thp": "always madvise [never]", "scratch": "/dev/vda ext4"}


def test_check_facts_accepts_a_good_guest() -> None:
    assert check_facts(get("arm64"), GOOD, "never", "disk") == []
    assert check_facts(get("arm64"), {**GOOD, "scratch": "/dev/ram0 ext4"}, "never", "ram") == []


def test_check_facts_names_each_problem() -> None:
    bad = {"machine": "x86_64", "page_size": "error: no awk", "thp": "[always] madvise never", "scratch": ""}
    problems = check_facts(get("arm64"), bad, "never", "disk")
    assert problems == [
        "uname -m is 'x86_64', expected 'aarch64'",
        "page size unreadable: 'error: no awk'",
        "THP is '[always] madvise never', expected [never]",
        "scratch is '', expected '/dev/vda ext4' (guest.scratch: disk)",
    ]
    assert check_facts(get("arm64"), GOOD, "never", "ram") == ["scratch is '/dev/vda ext4', expected '/dev/ram0 ext4' (guest.scratch: ram)"]


def test_guest_ssh_argv_pins_the_host_key(tmp_path: Path) -> None:
    g = Guest("arm64", 40022, KeyPair(tmp_path / "id", "ssh-ed25519 AAAAclient"), KeyPair(tmp_path / "hk", "ssh-ed25519 AAAAhost"), 10)
    assert g.known_hosts_line() == "[127.0.0.1]:40022 ssh-ed25519 AAAAhost"
    assert g.ssh_argv(tmp_path / "known") == [
        "ssh", "-p", "40022", "-i", str(tmp_path / "id"),
        "-o", f"UserKnownHostsFile={tmp_path / 'known'}", "-o", "StrictHostKeyChecking=yes",
        "-o", "IdentitiesOnly=yes", "-o", "PasswordAuthentication=no", "root@127.0.0.1",
    ]  # fmt: skip
